"""What the training module logs of a rollout, and the one piece of Lightning bookkeeping it adjusts."""

from __future__ import annotations

from typing import Any

from torch import nn
from torchmetrics import MeanMetric

from msgrpo.types import RolloutStats

ROLLOUT_METRICS = ("return_mean", "success_rate", "invalid_action_rate", "episode_len", "error_rate")


class RolloutMetrics(nn.ModuleDict):
    """``rollout/*`` means over every episode of an iteration (torchmetrics: synced across ranks) and the
    rollout's ``perf/*`` figures."""

    def __init__(self) -> None:
        super().__init__({name: MeanMetric() for name in ROLLOUT_METRICS})

    def log(self, module: Any, stats: RolloutStats) -> None:
        """Update with one iteration's episodes and log through ``module.log``."""
        length = stats.length.clamp(min=1)
        self["return_mean"].update(stats.returns)
        self["success_rate"].update(stats.success)
        self["invalid_action_rate"].update(stats.invalid / length, weight=length)
        self["episode_len"].update(stats.length)
        self["error_rate"].update(stats.error)
        for name in ROLLOUT_METRICS:
            module.log(f"rollout/{name}", self[name], prog_bar=name in ("success_rate", "return_mean"))
        module.log("rollout/return_std", stats.returns.std(unbiased=False))
        module.log("rollout/distinct_completions", stats.distinct)
        if stats.logprob_mismatch is not None:
            module.log("rollout/logprob_mismatch", stats.logprob_mismatch, reduce_fx="max")
        module.log("perf/rollout_s", stats.rollout_s)
        module.log("perf/rollout_tokens_per_s", stats.generated_tokens / max(stats.rollout_s, 1e-9))
        module.log("perf/model_time_share", stats.forward_s / max(stats.rollout_s, 1e-9))


def count_one_step(trainer: Any, before: int) -> None:
    """Make Lightning's ``global_step`` count one mini-batch once (``before``: its value at the start).

    It counts optimizer steps, but a mini-batch may make none (no signal, a non-finite or overshooting
    update) or several (trust-region retries); checkpoints (``ModelCheckpoint`` saves only when
    ``global_step`` moved), loggers and ``max_steps`` should see one step per mini-batch.
    """
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    delta = before + 1 - trainer.global_step
    for tracker in (progress.total, progress.current):
        tracker.ready += delta
        tracker.completed += delta
