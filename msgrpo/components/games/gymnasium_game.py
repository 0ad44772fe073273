"""Any registered gymnasium env with a discrete action space and a text (``ansi``) render, as a game.

    python -m msgrpo.recipes.frozen_lake fit --data.game=GymnasiumGame \\
        --data.game.init_args.env_id=CliffWalking-v1 --data.game.init_args.action_names=[up,right,down,left]

The observation is the env's own ``ansi`` render with terminal escape codes removed (coloured spans kept
between ``*`` marks); the rules list the actions and say what the marks are. Write a
:class:`~msgrpo.game.TextGame` subclass instead when the render says too little (see the README's "Bring
your own game").
"""

from __future__ import annotations

import re
from typing import Any, Literal

import gymnasium as gym

from msgrpo.errors import ConfigError, require
from msgrpo.game import ActionParser, TextGame

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOURED = re.compile(r"\x1b\[(?!0?m)[0-9;]*m(.*?)\x1b\[0?m", re.DOTALL)


def strip_ansi(text: str, mark: str = "*") -> str:
    """``text`` without terminal escape sequences, trailing blank lines dropped.

    Colour carries state in some renders (Taxi's taxi is a highlighted blank, Frozen Lake's player a red
    cell): a coloured span is kept between ``mark`` characters (``|\x1b[43m \x1b[0m|`` reads ``|* *|``).
    """
    return ANSI_ESCAPE.sub("", COLOURED.sub(lambda m: f"{mark}{m.group(1)}{mark}", text)).rstrip()


class GymnasiumGame(TextGame):
    """A registered gymnasium env played through its ``ansi`` render.

    Args:
        env_id: The gymnasium id (e.g. ``CliffWalking-v1``, ``Taxi-v4``); ``module:id`` loads a module first.
        action_names: One name per action of the env's ``Discrete`` action space, in order.
        max_steps: Step limit of an episode (gymnasium's ``max_episode_steps``; every step is a generate
            call, and some envs, like ``CliffWalking``, have no limit of their own). None: the env's own.
        description: One or two sentences on the task for the system message (default: the env id).
        success: What counts as a success: ``"terminated"`` (the env ended by its own rules, e.g. the goal
            reached) or ``"positive_reward"`` (a positive last reward).
        env_kwargs: Extra keyword arguments for ``gymnasium.make``.
        format_penalty: Subtracted from a step's reward when its text names no valid action.
        fallback: Action for such text: ``"first"`` or ``"random"``.
        parser: Action parser (default: the ``<action>`` tag).
        answer_format: The instruction after every observation (see :class:`~msgrpo.game.TextGame`).
    """

    def __init__(
        self,
        env_id: str,
        action_names: list[str],
        max_steps: int | None = 50,
        description: str | None = None,
        success: Literal["terminated", "positive_reward"] = "terminated",
        env_kwargs: dict[str, Any] | None = None,
        format_penalty: float = 0.1,
        fallback: Literal["first", "random"] = "first",
        parser: ActionParser | None = None,
        answer_format: str = "think",
    ) -> None:
        self.action_names = [str(a) for a in action_names]
        super().__init__(format_penalty=format_penalty, fallback=fallback, parser=parser, answer_format=answer_format)
        require(max_steps is None or max_steps >= 1, "max_steps", ">= 1 or null", max_steps)
        require(success in ("terminated", "positive_reward"), "success", "'terminated' or 'positive_reward'", success)
        self.env_id = env_id
        self.description = description
        self.success = success
        self.settings = dict(max_steps=max_steps, env_kwargs=dict(env_kwargs or {}))
        self.success_meaning = "the env ended by its own rules" if success == "terminated" else "positive final reward"
        env = self.make_env()  # validate early: the id exists, renders text, and the actions match
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete) or int(space.n) != len(self.action_names):
            raise ConfigError(
                f"action_names has {len(self.action_names)} names but {env_id}'s action space is {space}: give "
                "one name per action, in order",
                setting="action_names",
            )
        env.close()

    def make_env(self) -> gym.Env:
        try:
            return gym.make(
                self.env_id,
                render_mode="ansi",
                max_episode_steps=self.settings["max_steps"],
                **self.settings["env_kwargs"],
            )
        except (gym.error.Error, TypeError, ValueError, ModuleNotFoundError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"env_id {self.env_id!r} cannot be made with an ansi render: {first}", "env_id") from err

    def with_settings(self, **overrides: Any) -> GymnasiumGame:
        return GymnasiumGame(
            self.env_id, self.action_names, description=self.description, success=self.success,
            format_penalty=self.format_penalty, fallback=self.fallback, parser=self.parser,
            answer_format=self.answer_format_name, **{**self.settings, **overrides},
        )  # fmt: skip

    def rules(self) -> str:
        task = self.description or f"You are playing the gymnasium environment {self.env_id}."
        limit = self.settings["max_steps"]
        steps = f" You have at most {limit} moves." if limit else ""
        marks = " In the board, *...* marks a highlighted cell."
        return f"{task} Actions: {', '.join(self.action_names)}.{steps}{marks}"

    def render(self, env: gym.Env) -> str:
        return f"Current state:\n{strip_ansi(str(env.render()))}"

    def scenarios(self) -> dict[str, TextGame]:
        """``train``: the game as configured (an env brings no evaluation panel of its own)."""
        return {"train": self}

    def is_success(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> bool:
        return bool(terminated) if self.success == "terminated" else reward > 0
