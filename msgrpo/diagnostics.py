"""How a run went, in plain words: a return that peaked and fell back, an entropy that collapsed.

Pure functions of a run's history (one row of metrics per iteration, :attr:`MSGRPOModule.history`), so
the end-of-fit summary can say what happened and what to try instead of leaving a user to find it in
``metrics.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RETURN = "rollout/return_mean"
ENTROPY = "loss/entropy"

COLLAPSED_NATS = 0.1
"""Below this mean token entropy a policy is (nearly) deterministic: every episode of a group plays alike
and the group-relative advantages, the only learning signal, are mostly 0."""


def _series(history: Sequence[dict[str, float]], key: str) -> list[tuple[int, float]]:
    return [
        (int(row.get("iteration", i)), row[key])
        for i, row in enumerate(history)
        if math.isfinite(row.get(key, math.nan))
    ]


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first ones over the values so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def peaked_and_fell(history: Sequence[dict[str, float]], window: int = 10) -> dict[str, float] | None:
    """The training return's peak, when the run ends clearly below it.

    Smoothed over ``window`` iterations: the run learned (its peak is above its start by more than three
    standard errors of a window's mean) and lost it (its last window is below the peak by more than half of
    that gain and by three standard errors).

    Returns:
        ``{"peak_iteration", "peak", "start", "end"}`` (0-based iteration at the end of the peak window), or
        None when the run did not peak and fall (or is shorter than three windows).
    """
    points = _series(history, RETURN)
    if len(points) < 3 * window:
        return None
    iterations, values = zip(*points)
    smooth = _smooth(list(values), window)
    start, end = smooth[window - 1], smooth[-1]
    top = max(range(window - 1, len(smooth)), key=lambda i: smooth[i])
    peak = smooth[top]
    tail = values[-window:]
    mean = sum(tail) / window
    se = math.sqrt(sum((v - mean) ** 2 for v in tail) / (window - 1) / window) if window > 1 else 0.0
    gain = peak - start
    if gain > 3 * se and peak - end > max(0.5 * gain, 3 * se):
        return {"peak_iteration": float(iterations[top]), "peak": peak, "start": start, "end": end}
    return None


def entropy_collapse(history: Sequence[dict[str, float]], window: int = 10) -> dict[str, float] | None:
    """Where the policy became (nearly) deterministic without getting better after.

    The entropy of the last ``window`` iterations is below :data:`COLLAPSED_NATS`, and the training return
    of that window is not clearly (three standard errors) above the best window before the collapse:
    learning stopped there.

    Returns:
        ``{"iteration", "entropy", "return_before", "return_end"}`` (0-based, the first iteration of the
        collapsed stretch that lasts to the end), or None.
    """
    entropy = _series(history, ENTROPY)
    if len(entropy) < window or sum(v for _, v in entropy[-window:]) / window >= COLLAPSED_NATS:
        return None
    first = len(entropy)
    while first > 0 and entropy[first - 1][1] < COLLAPSED_NATS:
        first -= 1
    since = entropy[first][0] if first < len(entropy) else entropy[-window][0]
    returns = _series(history, RETURN)
    before = [v for i, v in returns if i < since]
    after = [v for i, v in returns if i >= since]
    if not before or not after:
        return None
    best_before = max(_smooth(before, window))
    tail = after[-window:]
    end = sum(tail) / len(tail)
    se = math.sqrt(sum((v - end) ** 2 for v in tail) / max(len(tail) - 1, 1) / len(tail))
    if end > best_before + 3 * se:  # it got clearly better after: deterministic and right
        return None
    return {"iteration": float(since), "entropy": sum(v for _, v in entropy[-window:]) / window,
            "return_before": best_before, "return_end": end}  # fmt: skip


def notes(history: Sequence[dict[str, float]], window: int = 10) -> list[str]:
    """One sentence per problem :func:`peaked_and_fell` and :func:`entropy_collapse` find, with what to try."""
    out = []
    if (fell := peaked_and_fell(history, window)) is not None:
        out.append(
            f"the training return peaked at {fell['peak']:.2f} (mean of the {window} iterations up to iteration "
            f"{int(fell['peak_iteration']) + 1}) and fell back to {fell['end']:.2f} by the end (it started at "
            f"{fell['start']:.2f}): later updates undid what earlier ones learned. Try a lower learning rate "
            "(model.optimizer.init_args.lr), a smaller trust region (model.rollback_kl), or "
            "msgrpo.callbacks.selection.BestPolicy (ends fit with the best-validating policy)"
        )
    if (collapse := entropy_collapse(history, window)) is not None:
        out.append(
            f"the policy's entropy fell below {COLLAPSED_NATS} nats from iteration {int(collapse['iteration']) + 1} on "
            f"({collapse['entropy']:.3f} at the end) and the training return did not improve after it "
            f"({collapse['return_end']:.2f}, best before {collapse['return_before']:.2f}): every episode of a group "
            "plays alike, so the advantages are 0 and nothing is learned. Try an entropy floor "
            "(model.loss.init_args.entropy_coef with entropy_target), a KL anchor (model.loss.init_args.kl_coef) "
            "or a lower learning rate"
        )
    return out
