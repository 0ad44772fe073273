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
    assert msgs[1]["content"].endswith("give your move inside <action>...</action>.")  # the answer format, no example
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
    assert action == "obs\n\nGive your move inside <action>...</action>."  # no example move to copy
    assert "back" not in think and "forward" not in think
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


class LongCorridor(Corridor):
    """The corridor with a configurable goal cell."""

    def __init__(self, length: int = 3, slope: float = 0.0):
        """The corridor.

        Args:
            length: The goal cell.
            slope: Unused.
        """
        super().__init__()
        self.length = length


class LongCorridorGame(CorridorGame):
    """A game whose env settings are keyword arguments of the game (no constructor written)."""

    def make_env(self):  # back to the base class's: built from the settings by build_env
        return TextGame.make_env(self)

    def build_env(self, **settings):
        return LongCorridor(**settings)


def test_env_settings_through_build_env():
    game = LongCorridorGame(format_penalty=0.3, length=5)
    assert game.settings == {"length": 5, "slope": 0.0}  # defaults filled in from the env's signature
    assert LongCorridorGame().settings == {"length": 3, "slope": 0.0}
    assert game.make_env().length == 5
    changed = game.with_settings(length=2)
    assert changed.make_env().length == 2 and changed.format_penalty == 0.3
    with pytest.raises(TypeError, match="lenght"):
        LongCorridorGame(lenght=5)  # a typo fails at construction, not at the first rollout
    with pytest.raises(TypeError, match="CorridorGame takes no env settings"):
        CorridorGame(length=5)

    class WrappedCorridorGame(LongCorridorGame):  # a wrapper's setting: not in the env's signature
        def build_env(self, max_episode_steps=10, **settings):
            return gym.wrappers.TimeLimit(LongCorridor(**settings), max_episode_steps=max_episode_steps)

    wrapped = WrappedCorridorGame(max_episode_steps=4, length=5)
    assert wrapped.settings == {"max_episode_steps": 4, "length": 5}  # kept as given
    assert wrapped.make_env().unwrapped.length == 5 and wrapped.with_settings(length=2).make_env().unwrapped.length == 2

    class NoEnv(TextGame):
        rules = render = CorridorGame.rules

    with pytest.raises(NotImplementedError, match="neither make_env"):
        NoEnv().make_env()


def test_cli_shows_the_env_settings_of_a_builtin_game():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(TextGame, "game")
    args = ["--game=msgrpo.components.games.Snake", "--game.init_args.width=6", "--game.init_args.fallback=random"]
    init = parser.parse_args(args).game.init_args
    assert (init.width, init.height, init.max_rounds, init.fallback) == (6, 10, 8, "random")
    game = parser.instantiate_classes(parser.parse_args(args)).game
    assert game.settings["width"] == 6 and game.make_env().width == 6
    lake = parser.parse_args(["--game=msgrpo.components.games.FrozenLake", "--game.init_args.max_steps=3"])
    assert lake.game.init_args.max_steps == 3 and lake.game.init_args.map_name is None
