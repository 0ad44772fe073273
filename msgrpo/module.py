"""MSGRPOModule: the LAP policy and the MS-GRPO loss as a LightningModule (Lightning's hooks, in order).

The pieces it strings together live beside it: strategies in :mod:`msgrpo.sharding`, the update's named
parts in :mod:`msgrpo.update`, checkpoint contents in :mod:`msgrpo.checkpointing`, evaluation records in
:mod:`msgrpo.evaluation`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

import msgrpo.quiet  # noqa: F401  (library notices that are not about the user's settings)
from msgrpo.checkpointing import CHECKPOINT_KEY, load_state, save_state, save_stop_checkpoint
from msgrpo.errors import require
from msgrpo.evaluation import EpisodeRecord, EvaluationSteps
from msgrpo.lm.decoding import TRUNK_SECONDS
from msgrpo.loss import MSGRPOLoss
from msgrpo.metrics import IterationCounters, RolloutMetrics, count_one_step
from msgrpo.policy import LanguagePolicy
from msgrpo.sharding import Sharding
from msgrpo.types import MiniBatch
from msgrpo.update import (
    NonFiniteGuard,
    TrustRegion,
    accumulate,
    approx_kl_of,
    data_parallel_normalisers,
    grads_finite,
    grads_nonzero,
    has_signal,
    micro_batch_loss,
)

__all__ = ["CHECKPOINT_KEY", "EpisodeRecord", "MSGRPOModule", "data_parallel_normalisers", "micro_batch_loss"]

T = TypeVar("T")


def _default_optimizer(params):
    return torch.optim.AdamW(params, lr=1e-4)


def reduced_precision(model: torch.nn.Module, trainer: L.Trainer | None) -> bool:
    """Whether a forward pass of ``model`` computes in fewer than 32 bits: a floating-point parameter in
    bf16 / fp16 (whatever the trainer's precision), or a trainer precision that is not 32- or 64-bit
    (autocast or converted weights). Incremental decoding and whole-sequence scoring round differently
    there."""
    low = any(p.is_floating_point() and p.dtype not in (torch.float32, torch.float64) for p in model.parameters())
    return low or (trainer is not None and not str(trainer.precision).startswith(("32", "64")))


class MSGRPOModule(EvaluationSteps, L.LightningModule):
    """Trains a :class:`LanguagePolicy` with the MS-GRPO loss.

    Each training batch is a :class:`MiniBatch` (one optimizer step): the gradients of its micro-batches
    are accumulated (manual optimization), clipped, and applied.

    Args:
        policy: The language-agent policy.
        loss: The MS-GRPO loss (default: clip 0.2, no KL).
        optimizer: Optimizer factory over the trainable parameters (default AdamW, lr 1e-4).
        max_grad_norm: Clip the gradient norm to this value (None = no clipping).
        eval_greedy: Evaluate with argmax decoding (else sample at the policy temperature).
        max_bad_updates: Stop the run after this many consecutive updates with a non-finite loss or
            gradient (each such update is skipped and counted in ``loss/skipped_updates``).
        lr_scheduler: Learning-rate scheduler factory over the optimizer, stepped once per MS-GRPO
            iteration (epoch), e.g. ``torch.optim.lr_scheduler.LinearLR``; None = constant rate.
        target_kl: Early stopping of an iteration's updates (as in PPO implementations): when a
            mini-batch finds the policy already further than this approximate KL from the rollout policy,
            its update and the iteration's remaining ones are skipped (``loss/kl_stopped`` counts the
            skipped updates). None = off.
        rollback_kl: A trust region by backtracking (:class:`~msgrpo.update.TrustRegion`): a step that
            takes the policy further than this approximate KL from the rollout policy is undone and retried
            smaller, ``rollback_retries`` times, then the iteration's remaining updates are skipped
            (``loss/rollbacks``). No overshooting step lands. One forward pass per step. None = off.
        rollback_retries: Smaller steps tried after an overshoot (0: undo and stop at once).
        transcripts: Episodes per scenario whose transcripts every evaluation writes under the log dir
            (``transcripts/eval.jsonl``; to TensorBoard too, with the boards as pictures). 0 = none.
        rescore_old_logprobs: Re-score the rollout's tokens with the update's whole-sequence pass before
            the updates and use those as the old log-probs (:func:`msgrpo.iteration.rescore_old_logprobs`;
            one extra no-grad forward pass per trained sample). None = automatic: on for an engine whose
            numerics differ (:attr:`~msgrpo.lm.engine.Engine.numerics_differ`) and below 32 bits
            (:func:`reduced_precision`: bf16 / fp16 weights or a reduced trainer precision), where the first
            update's ratio would otherwise not be 1. ``rollout/logprob_mismatch`` logs what it removed.

    The ``loss/*`` counters (``kl_stopped``, ``no_signal_updates``, ``rollbacks``, ``skipped_updates``)
    count one iteration's events each. A mini-batch with no signal (all advantages 0 and no KL or entropy
    term, or an exactly zero gradient) makes no optimizer step: Adam would still move the weights.
    """

    def __init__(
        self,
        policy: LanguagePolicy,
        loss: MSGRPOLoss | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        max_grad_norm: float | None = 1.0,
        eval_greedy: bool = True,
        max_bad_updates: int = 10,
        lr_scheduler: LRSchedulerCallable | None = None,
        target_kl: float | None = None,
        rollback_kl: float | None = None,
        rollback_retries: int = 3,
        transcripts: int = 2,
        rescore_old_logprobs: bool | None = None,
    ) -> None:
        super().__init__()
        require(max_grad_norm is None or max_grad_norm > 0, "max_grad_norm", "> 0 or null", max_grad_norm)
        require(target_kl is None or target_kl > 0, "target_kl", "> 0 or null", target_kl)
        require(rollback_kl is None or rollback_kl > 0, "rollback_kl", "> 0 or null", rollback_kl)
        require(rollback_retries >= 0, "rollback_retries", ">= 0", rollback_retries)
        require(max_bad_updates >= 1, "max_bad_updates", ">= 1", max_bad_updates)
        require(transcripts >= 0, "transcripts", ">= 0", transcripts)
        self.automatic_optimization = False
        self.policy = policy
        self.loss = loss or MSGRPOLoss()
        if self.loss.kl_coef > 0:
            # now, before any training or checkpoint restore: the KL anchor is the initial policy, in a
            # resumed run too (a copy made after Lightning restored a checkpoint would be the checkpoint)
            self.policy.enable_reference()
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.max_grad_norm = max_grad_norm
        self.eval_greedy = eval_greedy
        self.transcripts = transcripts
        self.rescore_old_logprobs = rescore_old_logprobs
        self.guard = NonFiniteGuard(max_bad_updates)
        self.target_kl = target_kl
        self.trust_region = TrustRegion(rollback_kl, rollback_retries) if rollback_kl is not None else None
        self.sharding = Sharding()
        self.rollout_metrics = RolloutMetrics()
        self.rollbacks = 0
        self.eval_results: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []
        self._trunk_mark = TRUNK_SECONDS[0]
        self.on_train_epoch_start()  # the per-iteration counters

    # ----- distribution --------------------------------------------------------------------------
    @property
    def needs_reference(self) -> bool:
        """Whether step samples need reference log-probs (a KL penalty)."""
        return self.loss.kl_coef > 0

    @property
    def rescores_old_logprobs(self) -> bool:
        """Whether the rollout's log-probs are re-scored before the updates (``rescore_old_logprobs``;
        automatic: whenever the numerics actually used are below 32 bits, from the weights' dtype
        (``policy.dtype: bfloat16``) or the trainer's precision (``bf16-mixed``, ``16-true``, ...))."""
        if self.rescore_old_logprobs is not None:
            return self.rescore_old_logprobs
        return self.policy.engine.numerics_differ or reduced_precision(self.policy, self._trainer)

    def _world(self) -> tuple[int, int]:
        """``(global rank, world size)``; ``(0, 1)`` outside a trainer."""
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str) -> None:
        self.sharding = Sharding.of(self._trainer)
        self.sharding.attach(self.policy)

    def configure_model(self) -> None:
        """Shard the policy when the strategy splits parameters (FSDP2: :class:`msgrpo.sharding.FSDP2`)."""
        self.sharding.shard(self)

    def run_sharded(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (rollouts: generation and reference scoring) where the strategy's model can run."""
        return self.sharding.run(self, fn)

    def _call(self, fn: Callable[[], T]) -> T:  # the target of FSDP1's forward redirection
        return fn()

    def lockstep(self) -> AbstractContextManager[LanguagePolicy]:
        """The policy to play episodes with (:meth:`msgrpo.sharding.Sharding.players`)."""
        return self.sharding.players(self.policy)

    def configure_callbacks(self) -> list[L.Callback]:
        """The end-of-fit summary (:class:`msgrpo.callbacks.summary.RunSummary`) for any trainer that has none."""
        from msgrpo.callbacks.summary import RunSummary

        trainer = self._trainer
        has = trainer is not None and any(isinstance(c, RunSummary) for c in trainer.callbacks)
        return [] if has else [RunSummary()]

    # ----- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_state(self, checkpoint)  # counters, history; under LoRA the adapter alone

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_state(self, checkpoint)

    def _weights_loaded(self) -> None:  # (Lightning loads a checkpoint's weights after on_load_checkpoint)
        self.policy.weights_changed()

    on_fit_start = on_train_start = on_validation_start = on_test_start = _weights_loaded

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.policy.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.counters = IterationCounters(
            rollbacks_at_start=self.rollbacks, skipped_at_start=self.guard.skipped, trunk_at_start=self._trunk_mark
        )
        self.evaluate_after_last_iteration()

    def log(self, name, value, *args, **kwargs) -> None:
        # Every value is one number per rank and iteration (batch_size 1). Across ranks: metric objects
        # (rollout/*) sync their states; plain numbers are averaged (or max-reduced) at the epoch end.
        kwargs.setdefault("batch_size", 1)
        kwargs.setdefault("sync_dist", self._world()[1] > 1)
        kwargs.setdefault("on_step", False)
        kwargs.setdefault("on_epoch", True)
        super().log(name, value, *args, **kwargs)

    def training_step(self, batch: MiniBatch, batch_idx: int) -> None:
        if batch.rollout_stats is not None:
            self.rollout_metrics.log(self, batch.rollout_stats)
        if self.counters.kl_stopped:  # an earlier mini-batch of this iteration stopped it (same on every rank)
            self.counters.kl_stopped += 1
            for micro in batch.micro_batches:
                micro.trunk.clear()
            return
        start, steps = time.perf_counter(), self.trainer.global_step
        try:
            self._update(batch)
        finally:
            for micro in batch.micro_batches:  # the frozen trunk's states served this mini-batch's passes
                micro.trunk.clear()
            self.counters.update_s += time.perf_counter() - start
            self.counters.update_tokens += int(sum(m.attention_mask.sum() for m in batch.micro_batches))
            count_one_step(self.trainer, steps)

    def _update(self, batch: MiniBatch) -> None:
        """One optimizer step over the mini-batch's micro-batches (:mod:`msgrpo.update`'s parts)."""
        world = self._world()[1]
        reduce_sum = lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()  # noqa: E731
        normalisers = data_parallel_normalisers(batch, world, reduce_sum)
        if normalisers[0] == 0:  # no real token on any rank (a no-op iteration): nothing to learn from
            return
        if not self.sharding.any(has_signal(batch, self.loss)):
            self.counters.no_signal += 1
            return
        opt = self.optimizers()
        opt.zero_grad()
        stats = accumulate(self.policy, self.loss, batch, normalisers, self.manual_backward, world == 1)
        finite = self.sharding.all(stats.finite)
        if not self.counters.updated:  # the iteration's first update: scored exactly as the rollout sampled?
            self.counters.updated = True
            self.log("loss/onpolicy_error", stats.onpolicy_error, reduce_fx="max")
        if finite and self.target_kl is not None and self.sharding.mean(stats.mean("loss/approx_kl")) > self.target_kl:
            opt.zero_grad()
            self.counters.kl_stopped = 1
            return
        if finite and self.max_grad_norm is not None:
            self.sharding.clip_gradients(self, opt, self.max_grad_norm)
        finite = finite and self.sharding.all(grads_finite(self.policy))
        if finite and not self.sharding.any(grads_nonzero(self.policy)):  # e.g. every entropy above the floor
            opt.zero_grad()
            self.counters.no_signal += 1
        elif finite:
            self._step(opt, batch)
        else:
            opt.zero_grad()
            self.guard.skip(lambda: save_stop_checkpoint(self.trainer))
        if finite:  # the same decision on every rank: every rank logs the same keys
            for name, value in stats.metrics().items():
                self.log(name, value)

    def _step(self, opt, batch: MiniBatch) -> None:
        """The optimizer step, inside the trust region when there is one."""
        self.guard.passed()
        if self.trust_region is None:
            opt.step()
            self.policy.weights_changed()
            return

        def measure() -> float:
            start = time.perf_counter()
            kl = approx_kl_of(self.policy, batch)
            self.sharding.release(self.policy)  # the step may be undone: no stale gathered parameters
            self.counters.measure_s += time.perf_counter() - start
            return self.sharding.mean(kl)

        landed, undone = self.trust_region.step(opt, self.policy, measure, self.policy.weights_changed)
        self.rollbacks += undone
        if not landed:  # every try overshot: no step, and none for the rest of the iteration
            self.counters.kl_stopped = 1

    def on_train_epoch_end(self) -> None:
        self.counters.log(self, self.rollbacks, self.guard.skipped, self.optimizers().param_groups[0]["lr"])
        self._trunk_mark = TRUNK_SECONDS[0]  # (the next iteration's reference and re-scoring come before its start)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # manual optimization: Lightning leaves stepping to the module
            scheduler.step()
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        self.history.append({"iteration": float(self.current_epoch), **metrics})
