"""Evaluation panels: named scenarios with fixed seeds, and their summary statistics."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from msgrpo.game import TextGame
from msgrpo.types import Episode

PANEL_SEED = 1_000_000
"""First reset seed of every evaluation panel (training seeds start at the run seed, far below)."""


@dataclass
class Scenario:
    """A named evaluation scenario: a game setting and its fixed reset seeds.

    Attributes:
        name: Scenario name (``nonslip-4x4``...).
        game: The game, configured for this scenario.
        seeds: One reset seed per evaluation episode.
    """

    name: str
    game: TextGame
    seeds: list[int]


def build_panel(
    game: TextGame, names: Sequence[str] | None = None, episodes: int = 50, seed: int = PANEL_SEED
) -> list[Scenario]:
    """The evaluation panel of ``game``: its named scenarios, ``episodes`` fixed seeds each.

    The same name, episode count and seed give the same maps and seeds on every machine.

    Args:
        game: The game whose :meth:`TextGame.scenarios` define the panel.
        names: Which scenarios (default: all the game defines).
        episodes: Episodes per scenario.
        seed: First reset seed; scenario episodes use ``seed, seed + 1, ...``.

    Raises:
        ValueError: For an unknown scenario name or ``episodes < 1``.
    """
    if episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {episodes}")
    available = game.scenarios()
    chosen = list(available) if names is None else list(names)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown} for {type(game).__name__}; choose from {sorted(available)}")
    seeds = list(range(seed, seed + episodes))
    return [Scenario(n, available[n], seeds) for n in chosen]


def summarize(episodes: Sequence[Episode]) -> dict[str, float]:
    """Summary statistics of a set of episodes.

    Returns:
        ``return_mean``, ``return_stderr`` (standard error of the mean, 0 for one episode),
        ``success_rate``, ``invalid_action_rate`` (invalid steps / all steps), ``episode_len``,
        ``episodes``, ``error_rate``.
    """
    n = len(episodes)
    if n == 0:
        raise ValueError("summarize() needs at least one episode")
    returns = [e.total_reward for e in episodes]
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1) if n > 1 else 0.0
    steps = sum(e.length for e in episodes)
    return {
        "return_mean": mean,
        "return_stderr": math.sqrt(var / n),
        "success_rate": sum(e.success for e in episodes) / n,
        "invalid_action_rate": sum(e.invalid_steps for e in episodes) / max(steps, 1),
        "episode_len": steps / n,
        "error_rate": sum(e.error is not None for e in episodes) / n,
        "episodes": float(n),
    }


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of per-scenario results (rows = scenarios)."""
    header = f"{'scenario':<16} {'success':>8} {'return':>16} {'invalid':>8} {'length':>7}"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        ret = f"{r['return_mean']:.3f} ± {r['return_stderr']:.3f}"
        lines.append(
            f"{name:<16} {r['success_rate']:>8.3f} {ret:>16} {r['invalid_action_rate']:>8.3f} {r['episode_len']:>7.2f}"
        )
    return "\n".join(lines)


def to_json(results: dict[str, dict[str, float]]) -> str:
    """``{"scenarios": {name: {...}}}`` as one JSON line."""
    return json.dumps({"scenarios": results}, sort_keys=True)
