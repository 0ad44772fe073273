"""What the training module logs of a rollout, and the one piece of Lightning bookkeeping it adjusts."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from msgrpo.lm.decoding import TRUNK_SECONDS
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


@dataclass
class IterationCounters:
    """One iteration's update events and timings, logged at its end. Each ``loss/*`` counter counts the
    iteration's own events (a column's sum is the run's total).

    Attributes:
        kl_stopped: Mini-batches skipped once ``target_kl`` or the trust region stopped the iteration.
        no_signal: Mini-batches that made no optimizer step (no learning signal, or an exactly zero gradient).
        updated: Whether the iteration's first update ran (``loss/onpolicy_error`` is measured there).
        update_s: Seconds in the updates (trust-region measuring passes included).
        measure_s: Seconds of them in trust-region measuring passes.
        update_tokens: Tokens (prompt and completion) the updates scored.
        rollbacks_at_start: The run's undone trust-region tries when the iteration began.
        skipped_at_start: The run's skipped non-finite updates when the iteration began.
        trunk_at_start: The process's seconds in frozen-trunk passes when the previous iteration ended (its
            rollout's reference and re-scoring passes come before the iteration's first hook).
    """

    kl_stopped: int = 0
    no_signal: int = 0
    updated: bool = False
    update_s: float = 0.0
    measure_s: float = 0.0
    update_tokens: int = 0
    rollbacks_at_start: int = 0
    skipped_at_start: int = 0
    trunk_at_start: float = 0.0

    def log(self, module: Any, rollbacks: int, skipped: int, lr: float) -> None:
        """Log the iteration's ``loss/*`` counters, learning rate and ``perf/*`` figures through ``module.log``
        (``rollbacks`` and ``skipped``: the run's totals now)."""
        module.log("loss/kl_stopped", float(self.kl_stopped), reduce_fx="max")
        module.log("loss/no_signal_updates", float(self.no_signal), reduce_fx="max")
        module.log("loss/rollbacks", float(rollbacks - self.rollbacks_at_start), reduce_fx="max")
        module.log("loss/skipped_updates", float(skipped - self.skipped_at_start), reduce_fx="max")
        module.log("loss/lr", lr)
        module.log("perf/update_s", self.update_s)
        module.log("perf/measure_s", self.measure_s)
        module.log("perf/trunk_s", TRUNK_SECONDS[0] - self.trunk_at_start)  # frozen-trunk passes (msgrpo.lm.trunk)
        module.log("perf/tokens_per_s", self.update_tokens / max(self.update_s, 1e-9))
        module.log("perf/peak_memory_mb", peak_memory_mb(module.device), reduce_fx="max")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA max allocated on GPUs, else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


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
