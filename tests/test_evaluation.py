"""Evaluation summaries, the margin over a reference and the printed table."""

import math

import pytest

from msgrpo.components.games import FrozenLake
from msgrpo.data import RolloutDataModule
from msgrpo.errors import ConfigError
from msgrpo.evaluation import format_table, margin_se


def summary(mean: float, stderr: float, episodes: int = 100) -> dict[str, float]:
    return {
        "return_mean": mean,
        "return_stderr": stderr,
        "success_rate": 0.5,
        "invalid_action_rate": 0.0,
        "episode_len": 8.0,
        "episodes": float(episodes),
    }


def test_margin_se_by_hand():
    # 0.10 - (-0.30) = 0.40 over sqrt(0.06^2 + 0.08^2) = 0.10: 4 standard errors
    assert margin_se(summary(0.10, 0.06), summary(-0.30, 0.08)) == pytest.approx(4.0)
    assert margin_se(summary(-0.30, 0.08), summary(0.10, 0.06)) == pytest.approx(-4.0)
    # a reference on 1,000 episodes instead of 100 (stderr / sqrt(10)): the margin is about the policy's own
    assert margin_se(summary(0.10, 0.06), summary(-0.30, 0.08 / math.sqrt(10))) == pytest.approx(
        0.40 / math.hypot(0.06, 0.08 / math.sqrt(10))
    )
    # exact returns on both sides: any difference is certain
    assert margin_se(summary(1.0, 0.0), summary(0.0, 0.0)) == math.inf
    assert margin_se(summary(0.0, 0.0), summary(1.0, 0.0)) == -math.inf
    assert margin_se(summary(0.5, 0.0), summary(0.5, 0.0)) == 0.0


def test_table_shows_episode_counts_and_the_margin_over_random():
    results = {"default-8": summary(0.10, 0.06)}
    refs = {"random": {"default-8": summary(-0.30, 0.08, 1000)}, "greedy": {"default-8": summary(2.0, 0.1, 1000)}}
    lines = format_table(results, refs).splitlines()
    assert lines[0].split()[-4:] == ["length", "episodes", "vs", "random"]
    trained, random, greedy = lines[2], lines[3], lines[4]
    assert trained.split()[:2] == ["default-8", "trained"] and trained.endswith(" 100    +4.0 SE")
    assert random.split()[0] == "random" and random.endswith(" 1000")
    assert greedy.split()[0] == "greedy" and greedy.endswith(" 1000")
    assert "standard errors" in lines[-1]
    # without references: the plain table, no margin column
    plain = format_table(results).splitlines()
    assert "episodes" not in plain[0] and len(plain) == 3


def test_reference_panel_extends_the_evaluation_seeds():
    data = RolloutDataModule(FrozenLake(), eval_scenarios=["train", "nonslip-4x4"], eval_episodes=5,
                             reference_episodes=40)  # fmt: skip
    for scenario, many in zip(data.panel, data.reference_panel, strict=True):
        assert scenario.name == many.name
        assert len(many.seeds) == 40 and many.seeds[:5] == scenario.seeds  # the model's seeds first
    with pytest.raises(ConfigError, match="reference_episodes"):
        RolloutDataModule(FrozenLake(), reference_episodes=0)
