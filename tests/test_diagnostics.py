"""Collapse diagnostics on hand-made histories."""

import pytest

from msgrpo.diagnostics import entropy_collapse, notes, peaked_and_fell


def _history(returns, entropies=None):
    entropies = entropies or [1.0] * len(returns)
    return [{"iteration": float(i), "rollout/return_mean": r, "loss/entropy": e}
            for i, (r, e) in enumerate(zip(returns, entropies))]  # fmt: skip


def test_a_return_that_peaks_and_falls_back_is_named_with_its_peak():
    # 20 iterations at -0.5, a rise to 0.5 held for 20, then 20 at -0.3 (+-0.01 noise): window 10
    noise = [0.01, -0.01] * 50
    returns = [-0.5] * 20 + [0.5] * 20 + [-0.3] * 20
    fell = peaked_and_fell(_history([r + n for r, n in zip(returns, noise)]))
    assert fell is not None
    assert fell["peak"] == pytest.approx(0.5, abs=0.011) and fell["end"] == pytest.approx(-0.3, abs=0.011)
    assert fell["start"] == pytest.approx(-0.5, abs=0.011)
    assert 29 <= fell["peak_iteration"] <= 39  # a window that lies inside the plateau
    assert "peaked at 0.50" in notes(_history(returns))[0]


def test_steady_learning_and_noise_are_not_named():
    assert peaked_and_fell(_history([-0.5 + i / 60 for i in range(60)])) is None  # still rising at the end
    noisy = [(-1) ** i * 0.3 for i in range(60)]  # large noise, no trend: no peak stands out of it
    assert peaked_and_fell(_history(noisy)) is None
    assert peaked_and_fell(_history([0.0, 1.0, 0.0] * 5)) is None  # shorter than three windows
    # a small dip after learning (less than half the gain) is not a collapse
    assert peaked_and_fell(_history([-0.5] * 20 + [0.5] * 20 + [0.3] * 20)) is None


def test_an_entropy_collapse_without_improvement_is_named_from_where_it_started():
    # learning up to iteration 29 (the last window before the collapse averages -0.01), flat and noisy after
    returns = [-0.5 + 0.02 * i for i in range(30)] + [0.0 + (-1) ** i * 0.05 for i in range(30)]
    entropies = [1.3 - 0.04 * i for i in range(30)] + [0.01] * 30  # 0.14 at 29, collapsed from 30 on
    collapse = entropy_collapse(_history(returns, entropies))
    assert collapse is not None and collapse["iteration"] == 30 and collapse["entropy"] == pytest.approx(0.01)
    assert "entropy fell below 0.1 nats from iteration 31" in notes(_history(returns, entropies))[-1]
    # the same collapse onto a policy that keeps getting better (deterministic and right) is not named
    better = returns[:30] + [0.3 + 0.01 * i for i in range(30)]
    assert entropy_collapse(_history(better, entropies)) is None
    # no collapse: entropy above the threshold at the end
    assert entropy_collapse(_history(returns, [1.0] * 60)) is None
    assert notes(_history(returns, [1.0] * 60)) == []
