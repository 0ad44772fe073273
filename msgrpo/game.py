"""TSMG contract: a gymnasium environment plus a text interface becomes a text-mediated game.

A :class:`TextGame` owns three things the core never looks inside of:

* how to build the gymnasium env (:meth:`TextGame.make_env`),
* how to render its current state as text (:meth:`TextGame.rules` for the system message,
  :meth:`TextGame.render` for the user message),
* the action names of its ``Discrete`` action space.

Everything else (chat messages, parsing the answer, the fallback for text naming no valid action and
the format penalty, success) is generic and lives here, so a new game is one small subclass.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from msgrpo.errors import require

INVALID = -1
"""Marker returned by a parser for text that names no valid action."""

DEFAULT_ANSWER_FORMAT = "Think briefly inside <think>...</think>, then give your move inside <action>...</action>."
ANSWER_FORMATS = {
    "think": DEFAULT_ANSWER_FORMAT,
    "action": "Give your move inside <action>...</action>.",
    "none": "",
}
"""Named answer-format instructions. None names a move: small instruct models copy an example answer (SmolLM2
answered the example move with probability 0.92-0.95 at every state, whatever the board); the rules list
the moves. A custom text may still use ``{example}`` (the first action name)."""


class ActionParser(ABC):
    """Maps generated text to an action index, or :data:`INVALID`."""

    @abstractmethod
    def parse(self, text: str, action_names: list[str]) -> int:
        """Read an action from ``text``.

        Args:
            text: The generated text (response prefix included).
            action_names: The game's action names; the index in this list is the action.

        Returns:
            The action index, or :data:`INVALID` (-1). Never raises on any string.
        """


class TagParser(ActionParser):
    """Reads the action from an ``<action>...</action>`` tag.

    Rules (documented behaviour, each tested):

    * Tag names and contents are case-insensitive; whitespace inside the tag is ignored
      (``< Action > UP </ACTION>`` reads ``up``).
    * Anything inside ``<think>...</think>`` is ignored, so an action word or tag that only appears while
      thinking does not count.
    * With several action tags, the last one counts (models often restate their final answer).
    * An opening tag whose closing tag is missing because the text ends (generation truncated at
      ``max_new_tokens``) still counts: its content runs to the end of the text.
    * The content must equal an action name after trimming; ``up!`` or ``go up`` are invalid.
    * Empty text, text without a tag, or an unknown name gives :data:`INVALID`.
    """

    _think = re.compile(r"<\s*think\s*>.*?(<\s*/\s*think\s*>|$)", re.IGNORECASE | re.DOTALL)
    _tag = re.compile(r"<\s*action\s*>(.*?)(?:<\s*/\s*action\s*>|$)", re.IGNORECASE | re.DOTALL)

    def parse(self, text: str, action_names: list[str]) -> int:
        visible = self._think.sub(" ", text)
        matches = self._tag.findall(visible)
        if not matches:
            return INVALID
        content = " ".join(matches[-1].split()).lower()
        for index, name in enumerate(action_names):
            if content == name.lower():
                return index
        return INVALID


@dataclass
class StepResult:
    """What happened when the agent's text was executed.

    Attributes:
        action: The executed action (the fallback when the text named none).
        valid: Whether the text named a valid action.
        reward: Environment reward minus the format penalty when invalid.
        terminated: Gymnasium ``terminated``.
        truncated: Gymnasium ``truncated``.
        info: Gymnasium ``info``.
    """

    action: int
    valid: bool
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


# ----- reference players: scripted agents that play a game without a language model -------------------------
class ReferencePolicy(ABC):
    """A scripted policy: picks a domain action from the env's state (no text involved)."""

    #: Short name used by the baselines CLI and in logs.
    name: str = "reference"

    def reset(self, game: TextGame, env: gym.Env) -> None:  # noqa: B027 - optional hook
        """Called once per episode, right after ``game.reset(env, seed)``. Default: nothing."""

    @abstractmethod
    def act(self, game: TextGame, env: gym.Env) -> int:
        """The action index (into ``game.action_names``) to play in the env's current state."""


class RandomPolicy(ReferencePolicy):
    """Uniformly random actions, reproducible per episode.

    The RNG is reseeded at every :meth:`reset` from ``(seed, env reset seed)``, so an episode's actions
    depend only on its reset seed (and ``seed``), not on which episodes were played before it. The env's own
    RNG is never touched.

    Args:
        seed: Extra seed mixed into every episode's RNG (different values give different random players).
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def reset(self, game: TextGame, env: gym.Env) -> None:
        env_seed = int(getattr(env.unwrapped, "np_random_seed", -1))
        self._rng = np.random.default_rng([self.seed % 2**63, env_seed % 2**63])

    def act(self, game: TextGame, env: gym.Env) -> int:
        return int(self._rng.integers(len(game.action_names)))


class TextGame(ABC):
    """Base class of every text-mediated game.

    Args:
        format_penalty: Subtracted from a step's reward when its text names no valid action.
        fallback: What to execute for such text: ``"first"`` (action 0), ``"random"`` (drawn from the
            env's own seeded RNG, so episodes replay), or ``"noop"`` (the game's :attr:`noop_action`).
        parser: How to read the action from text. Defaults to :class:`TagParser`.
        answer_format: The instruction after every observation: ``"think"`` (think, then the action tag),
            ``"action"`` (the action tag only: fewer prompt tokens when the answer is one constrained
            token), ``"none"``, or any text (``{example}`` becomes the first action name).
        **settings: The env's settings, for a game that defines :meth:`build_env`.
    """

    #: Names of the actions; index = action id of the ``Discrete`` action space.
    action_names: list[str] = []
    #: The action executed for ``fallback="noop"``, or None when the game has none.
    noop_action: int | None = None
    #: The env settings of this game (constructor keyword arguments), used by :meth:`with_settings`.
    settings: dict[str, Any] = {}
    #: What :meth:`is_success` means in this game, in a few words (shown in the end-of-training summary).
    success_meaning: str = "positive final reward"

    def __init__(
        self,
        format_penalty: float = 0.1,
        fallback: Literal["first", "random", "noop"] = "first",
        parser: ActionParser | None = None,
        answer_format: str = "think",
        **settings: Any,
    ) -> None:
        require(format_penalty >= 0, "format_penalty", ">= 0", format_penalty)
        require(fallback in ("first", "random", "noop"), "fallback", "'first', 'random' or 'noop'", fallback)
        require(
            fallback != "noop" or self.noop_action is not None,
            "fallback",
            f"'first' or 'random' ({type(self).__name__} has no no-op action)",
            fallback,
        )
        self.format_penalty = format_penalty
        self.answer_format_name = answer_format
        self.fallback = fallback
        self.parser = parser or TagParser()
        if settings or self._builds_env():
            env = self.build_env(**settings)  # validates early, with the user's values in the message
            try:  # in full: the env's defaults filled in from its signature
                bound = inspect.signature(type(env.unwrapped)).bind(**settings)
                bound.apply_defaults()
                self.settings = dict(bound.arguments)
            except TypeError:  # settings that are not the env's own (a wrapper's): kept as given
                self.settings = dict(settings)

    # ----- what a game defines -------------------------------------------------------------------
    def build_env(self, **settings: Any) -> gym.Env:
        """A fresh env built from keyword settings (``return SnakeEnv(**settings)``).

        A game that defines this (the built-in ones) needs no constructor: its env's settings are
        keyword arguments of the game (``**settings``), stored in full in :attr:`settings`, and the env's
        signature is the one list of them (the LightningCLI follows ``**settings`` here and shows the
        env's parameters and docstrings: ``--data.game.init_args.width`` for Snake). A game that does not
        defines :meth:`make_env` instead.
        """
        raise TypeError(f"{type(self).__name__} takes no env settings (got {sorted(settings)})")

    def _builds_env(self) -> bool:
        return type(self).build_env is not TextGame.build_env

    def make_env(self) -> gym.Env:
        """Build a fresh gymnasium env with a ``Discrete(len(action_names))`` action space."""
        if not self._builds_env():
            raise NotImplementedError(f"{type(self).__name__} defines neither make_env() nor build_env()")
        return self.build_env(**self.settings)

    @abstractmethod
    def rules(self) -> str:
        """System-message text: the task, the available actions and the rules."""

    @abstractmethod
    def render(self, env: gym.Env) -> str:
        """User-message text describing the env's current state (built from its state, not ANSI)."""

    def is_success(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> bool:
        """Whether the episode that just ended counts as a success. Default: positive final reward."""
        return bool(terminated and reward > 0)

    def scenarios(self) -> dict[str, TextGame]:
        """Named evaluation scenarios (fixed game settings); the default is the game itself."""
        return {"default": self}

    def frame(self, env: gym.Env) -> Any:
        """A picture of the env's current state for replays and loggers (a ``PIL.Image``).

        Default: the text observation drawn as text (:func:`msgrpo.observe.frames.text_image`); games with a board
        draw it (:func:`msgrpo.observe.frames.grid_image`).
        """
        from msgrpo.observe.frames import text_image

        return text_image(self.render(env))

    def default_scenarios(self) -> list[str] | None:
        """The scenarios evaluated when ``data.eval_scenarios`` is null (None: every scenario)."""
        return None

    def reference_policies(self) -> dict[str, Any]:
        """Scripted players (:class:`~msgrpo.players.ReferencePolicy`, no language model) that an
        evaluation is read against: the floor and, where the game has one, a ceiling. Default: a
        uniformly random player."""
        return {"random": RandomPolicy()}

    def with_settings(self, **overrides: Any) -> TextGame:
        """A copy of this game with some of its :attr:`settings` changed (same penalty, fallback, parser).

        Games that define :meth:`build_env` (the built-in ones) get this for free; a game with a
        constructor of its own gets it by storing its settings (keyword arguments) in ``self.settings``.
        """
        shared = dict(format_penalty=self.format_penalty, fallback=self.fallback, parser=self.parser)
        if "answer_format" in inspect.signature(type(self).__init__).parameters:
            shared["answer_format"] = self.answer_format_name
        return type(self)(**{**self.settings, **overrides}, **shared)

    # ----- generic machinery ---------------------------------------------------------------------
    def answer_format(self) -> str:
        """The answer-format instruction appended to every user message."""
        text = ANSWER_FORMATS.get(self.answer_format_name, self.answer_format_name)
        return text.replace("{example}", self.action_names[0]) if text else ""

    def messages(self, env: gym.Env) -> list[dict[str, str]]:
        """Chat messages for the env's current state (see :meth:`chat`)."""
        return self.chat(self.render(env))

    def chat(self, observation: str) -> list[dict[str, str]]:
        """Chat messages for a rendered state: system = rules, user = observation + answer format."""
        return [
            {"role": "system", "content": self.rules()},
            {"role": "user", "content": f"{observation}\n\n{fmt}" if (fmt := self.answer_format()) else observation},
        ]

    def parse(self, text: str) -> int:
        """Action index named by ``text``, or :data:`INVALID`."""
        return self.parser.parse(text, list(self.action_names))

    def fallback_action(self, env: gym.Env) -> int:
        """The action executed for text naming no valid action."""
        if self.fallback == "random":
            return int(env.unwrapped.np_random.integers(len(self.action_names)))
        if self.fallback == "noop":
            return int(self.noop_action)  # type: ignore[arg-type]
        return 0

    def act(self, env: gym.Env, text: str) -> StepResult:
        """Interpret ``text``, execute the action (or the fallback) and apply the format penalty."""
        action = self.parse(text)
        valid = action != INVALID
        if not valid:
            action = self.fallback_action(env)
        _, reward, terminated, truncated, info = env.step(action)
        reward = float(reward) - (0.0 if valid else self.format_penalty)
        return StepResult(action, valid, reward, bool(terminated), bool(truncated), dict(info))

    def reset(self, env: gym.Env, seed: int) -> None:
        """Reset ``env`` with ``seed`` (every random source of the episode comes from it)."""
        env.reset(seed=int(seed))


def grid_to_text(rows: list[list[str]]) -> str:
    """Join a grid of single-character cells into lines (first row first)."""
    return "\n".join(" ".join(row) for row in rows)


def as_int(x: Any) -> int:
    """Convert numpy scalars to plain ``int``."""
    return int(np.asarray(x).item())
