"""Reference-policy baselines on a game's evaluation panel.

Usage::

    python -m msgrpo.tools.baselines frozen_lake --policy optimal [--episodes 50] [--scenarios a,b] [--seed N]
    python -m msgrpo.tools.baselines snake --policy greedy
    python -m msgrpo.tools.baselines snake --policy random

Plays the panel of the game's default settings (:func:`msgrpo.evaluation.build_panel`, the same seeds an LM
evaluation uses), prints the results table and, as the last line, one JSON object::

    {"policy": ..., "game": ..., "scenarios": {name: {"success_rate", "return_mean", "return_stderr",
                                                        "invalid_action_rate", "episode_len"}}}

Progress goes to stderr, one line per scenario. Exit code 2 (one-line message) for a bad game, policy,
policy/game combination, scenario name or episode count.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence

from msgrpo.evaluation import PANEL_SEED, REPORTED, build_panel, format_table, summarize
from msgrpo.game import TextGame
from msgrpo.players import ReferencePolicy, play_reference


def _frozen_lake() -> TextGame:
    from msgrpo.components.games.frozen_lake import FrozenLake

    return FrozenLake()


def _snake() -> TextGame:
    from msgrpo.components.games.snake import Snake

    return Snake()


GAMES: dict[str, Callable[[], TextGame]] = {"frozen_lake": _frozen_lake, "snake": _snake}
"""Game name -> the game with its default settings."""


def make_game(name: str) -> TextGame:
    """A built-in game by short name, or any :class:`TextGame` by class path (``my_module.MyGame``) with its
    default settings."""
    if name in GAMES:
        return GAMES[name]()
    module, _, cls = name.rpartition(".")
    try:
        game = getattr(importlib.import_module(module), cls)() if module else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"unknown game {name!r}: {err}") from err
    if not isinstance(game, TextGame):
        raise ValueError(f"unknown game {name!r}; choose from {', '.join(GAMES)} or give a TextGame class path")
    return game


def policies(game_name: str) -> dict[str, ReferencePolicy]:
    """The reference policies a game declares (:meth:`TextGame.reference_policies`)."""
    return make_game(game_name).reference_policies()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m msgrpo.tools.baselines",
        description="Play a reference policy (no language model) on a game's evaluation panel.",
    )
    parser.add_argument("game", help=f"one of {', '.join(GAMES)}, or a TextGame class path (my_module.MyGame)")
    parser.add_argument(
        "--policy",
        required=True,
        help="random (any game), optimal (frozen_lake: exact value iteration), greedy (snake: scripted)",
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes per scenario (default 50)")
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario names (default: all)")
    parser.add_argument("--seed", type=int, default=PANEL_SEED, help=f"first panel seed (default {PANEL_SEED})")
    return parser


def run(
    game_name: str,
    policy_name: str,
    episodes: int = 50,
    scenarios: Sequence[str] | None = None,
    seed: int = PANEL_SEED,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Play ``policy_name`` on the panel of ``game_name``; returns the full :func:`summarize` per scenario.

    Raises:
        ValueError: Unknown game, policy or scenario, a policy that does not play this game, or
            ``episodes < 1``.
    """
    game = make_game(game_name)
    available = game.reference_policies()
    if policy_name not in available:
        raise ValueError(
            f"policy {policy_name!r} does not play {game_name}; policies for {game_name}: {', '.join(available)}"
        )
    panel = build_panel(game, scenarios, episodes, seed)
    policy = available[policy_name]
    results = {}
    for scenario in panel:
        start = time.perf_counter()
        summary = summarize(play_reference(policy, scenario))
        results[scenario.name] = summary
        if progress:
            print(
                f"[baselines] {game_name}/{policy_name} {scenario.name}: {len(scenario.seeds)} episodes in "
                f"{time.perf_counter() - start:.2f}s, success {summary['success_rate']:.3f}, "
                f"return {summary['return_mean']:.3f}",
                file=sys.stderr,
                flush=True,
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or raises ``SystemExit(2)`` on a usage error."""
    args = _parser().parse_args(argv)
    names = None
    if args.scenarios is not None:
        names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    try:
        if names is not None and not names:
            raise ValueError("--scenarios names no scenario")
        results = run(args.game, args.policy, args.episodes, names, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(results))
    payload = {
        "policy": args.policy,
        "game": args.game,
        "scenarios": {name: {k: r[k] for k in REPORTED} for name, r in results.items()},
    }
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
