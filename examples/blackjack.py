"""Bring your own game: gymnasium's Blackjack-v1 as a text game, trained by the stock recipes.

A :class:`~msgrpo.game.TextGame` says how to build the env, what the rules are and how a state reads as
text; the framework does the rest (chat messages, parsing the ``<action>`` tag, the fallback move and
format penalty for text that names no action, success, evaluation panels, reference players).

    PYTHONPATH=examples python -m msgrpo.recipes.frozen_lake fit --data.game=blackjack.Blackjack \\
        --model.policy.init_args.allowed_tokens=null --model.policy.init_args.max_new_tokens=4
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
from gymnasium.envs.toy_text.blackjack import sum_hand, usable_ace

from msgrpo.game import ActionParser, TextGame


class Blackjack(TextGame):
    """One hand of Blackjack against the dealer (``Blackjack-v1``): stick or hit; win +1, lose -1, draw 0.

    Args:
        natural: Pay 1.5 for a natural blackjack (gymnasium's ``natural``).
        sab: Follow Sutton and Barto's rules exactly (gymnasium's ``sab``).
        format_penalty: Subtracted from a step's reward when its text names no action.
        fallback: Action for such text: ``"first"`` (stick) or ``"random"``.
        parser: Action parser (default: the ``<action>`` tag).
    """

    action_names = ["stick", "hit"]  # index = the env's action id
    success_meaning = "won the hand"

    def __init__(
        self,
        natural: bool = False,
        sab: bool = False,
        format_penalty: float = 0.1,
        fallback: Literal["first", "random"] = "first",
        parser: ActionParser | None = None,
    ) -> None:
        super().__init__(format_penalty=format_penalty, fallback=fallback, parser=parser)
        self.settings = dict(natural=natural, sab=sab)  # with_settings() and the scenarios build on these

    def make_env(self) -> gym.Env:
        return gym.make("Blackjack-v1", **self.settings)

    def rules(self) -> str:
        return (
            "You are playing one hand of Blackjack against the dealer. Cards 2-10 count their value, face "
            "cards 10, an ace 1 or 11. Actions: stick (stop taking cards) or hit (take one more card). Going "
            "over 21 loses at once. When you stick, the dealer draws until reaching 17; the higher sum not "
            "over 21 wins. A win gives 1, a loss -1, a draw 0."
        )

    def render(self, env: gym.Env) -> str:
        table = env.unwrapped
        ace = " (with an ace counted as 11)" if usable_ace(table.player) else ""
        cards = ", ".join(map(str, table.player))
        return f"Your cards: {cards}, sum {sum_hand(table.player)}{ace}. The dealer shows: {table.dealer[0]}."

    def is_success(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> bool:
        return reward > 0

    def scenarios(self) -> dict[str, TextGame]:
        return {"train": self, "natural": self.with_settings(natural=True)}
