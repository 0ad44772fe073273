"""The TSMG contract: parsing, fallback and format penalty, generic games."""

import gymnasium as gym
import pytest

from msgrpo.components.games import FrozenLake, Snake
from msgrpo.game import INVALID, TagParser, TextGame

NAMES = ["left", "down", "right", "up"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<action>up</action>", 3),
        ("<think>go</think><action>right</action>", 2),
        ("< Action >  DOWN </ACTION>", 1),
        ("<action>\n left \n</action>", 0),
        ("<action>up</action> then <action>left</action>", 0),  # last tag counts
        ("<action>up", 3),  # truncated: unterminated tag at the end of the text
        ("<think>I pick <action>up</action></think>", INVALID),  # only inside thinking
        ("<think>unfinished thought <action>up</action>", INVALID),  # unterminated think hides the rest
        ("up", INVALID),  # no tag
        ("", INVALID),
        ("<action>go up</action>", INVALID),
        ("<action>up!</action>", INVALID),
        ("<action></action>", INVALID),
        ("<action>jump</action>", INVALID),
        ("\ufffd\x00<action>left</action>\ufffd", 0),
    ],
)
def test_tag_parser(text, expected):
    assert TagParser().parse(text, NAMES) == expected


class Corridor(gym.Env):
    """A 1-D corridor: start at 0, goal at 3; actions back/forward."""

    def __init__(self):
        self.action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.spaces.Discrete(4)
        self.pos = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self.pos, {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos == 3
        return self.pos, float(done), done, False, {}


class CorridorGame(TextGame):
    """A new game without touching the core: env + renderer + action names."""

    action_names = ["back", "forward"]

    def make_env(self):
        return Corridor()

    def rules(self):
        return "Walk forward to cell 3."

    def render(self, env):
        return f"You are at cell {env.pos}."


def test_generic_game_messages_and_act():
    game = CorridorGame(format_penalty=0.25)
    env = game.make_env()
    game.reset(env, 0)
    msgs = game.messages(env)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == "Walk forward to cell 3."
    assert msgs[1]["content"].startswith("You are at cell 0.\n\n")
    assert "<action>back</action>" in msgs[1]["content"]  # answer-format example
    ok = game.act(env, "<action>forward</action>")
    assert (ok.action, ok.valid, ok.reward) == (1, True, 0.0)
    bad = game.act(env, "I refuse")
    # fallback "first" executes action 0 (back) and subtracts the penalty
    assert (bad.action, bad.valid, bad.reward) == (0, False, -0.25)
    assert env.pos == 0


def test_answer_formats():
    def user(game):
        return game.chat("obs")[1]["content"]

    think, action = user(CorridorGame()), user(CorridorGame(answer_format="action"))
    assert action == "obs\n\nGive your move inside <action>...</action>, for example <action>back</action>."
    assert think.startswith("obs\n\n") and "<think>" in think and len(think) > len(action)
    assert user(CorridorGame(answer_format="none")) == "obs"
    assert user(CorridorGame(answer_format="Say {example}.")) == "obs\n\nSay back."
    # the built-in games take it, and a changed copy keeps it
    lake = FrozenLake(answer_format="action")
    assert lake.with_settings(max_steps=3).answer_format() == lake.answer_format() != FrozenLake().answer_format()
    assert Snake(answer_format="none").with_settings(max_rounds=3).chat("obs")[1]["content"] == "obs"


def test_random_fallback_is_seeded():
    game = CorridorGame(fallback="random")
    actions = []
    for _ in range(2):
        env = game.make_env()
        game.reset(env, 123)
        actions.append([game.act(env, "??").action for _ in range(10)])
    assert actions[0] == actions[1]
    assert set(actions[0]) == {0, 1}


def test_bad_game_settings():
    with pytest.raises(ValueError, match="no-op"):
        CorridorGame(fallback="noop")
    with pytest.raises(ValueError, match="format_penalty"):
        CorridorGame(format_penalty=-1)
    with pytest.raises(ValueError, match="fallback"):
        CorridorGame(fallback="stay")
