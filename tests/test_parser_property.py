"""Property test: the parser never raises and returns a valid action or the invalid marker."""

from hypothesis import given, settings
from hypothesis import strategies as st

from msgrpo.game import INVALID, TagParser

NAMES = ["up", "down", "left", "right"]
pieces = st.sampled_from(
    [
        "<action>",
        "</action>",
        "<think>",
        "</think>",
        "< ACTION >",
        "up",
        "Left",
        " ",
        "\n",
        "\ufffd",
        "<",
        ">",
    ]
)
texts = st.one_of(st.text(max_size=300), st.lists(st.one_of(pieces, st.text(max_size=5)), max_size=30).map("".join))


@settings(max_examples=300, deadline=None)
@given(texts)
def test_parser_never_raises(text):
    result = TagParser().parse(text, NAMES)
    assert result == INVALID or 0 <= result < len(NAMES)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(NAMES),
    st.text(alphabet=" \t\n", max_size=3),
    st.text(alphabet=" \t\n", max_size=3),
    st.booleans(),
)
def test_tagged_names_always_parse(name, left, right, upper):
    text = f"<think>x</think><action>{left}{name.upper() if upper else name}{right}</action>"
    assert TagParser().parse(text, NAMES) == NAMES.index(name)
