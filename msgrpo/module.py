"""MSGRPOModule: the LAP policy and the MS-GRPO loss as a LightningModule."""

from __future__ import annotations

import resource
import sys
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from msgrpo.errors import ConfigError
from msgrpo.evaluation import Scenario, summarize
from msgrpo.loss import MSGRPOLoss
from msgrpo.policy import LanguagePolicy
from msgrpo.rollout import play
from msgrpo.types import MiniBatch

ROLLOUT_METRICS = ("return_mean", "success_rate", "invalid_action_rate", "episode_len", "error_rate")


def _default_optimizer(params):
    return torch.optim.AdamW(params, lr=1e-4)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA max allocated on GPUs, else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class MSGRPOModule(L.LightningModule):
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
    """

    def __init__(
        self,
        policy: LanguagePolicy,
        loss: MSGRPOLoss | None = None,
        optimizer: OptimizerCallable = _default_optimizer,
        max_grad_norm: float | None = 1.0,
        eval_greedy: bool = True,
        max_bad_updates: int = 10,
    ) -> None:
        super().__init__()
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ConfigError(f"model.max_grad_norm must be > 0 or null, got {max_grad_norm}")
        self.automatic_optimization = False
        self.policy = policy
        self.loss = loss or MSGRPOLoss()
        self.optimizer_factory = optimizer
        self.max_grad_norm = max_grad_norm
        self.eval_greedy = eval_greedy
        self.max_bad_updates = max_bad_updates
        self.fixed_generation_steps = False
        self.rollout_metrics = nn.ModuleDict({k: MeanMetric() for k in ROLLOUT_METRICS})
        self.bad_updates = 0
        self.skipped_updates = 0
        self.eval_results: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, float]] = []
        self._update_s = 0.0
        self._update_tokens = 0

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        return self.optimizer_factory(params)

    def on_fit_start(self) -> None:
        if self.loss.kl_coef > 0:
            self.policy.enable_reference()

    # ----- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._update_s, self._update_tokens = 0.0, 0

    def _log_rollout(self, stats: dict[str, torch.Tensor]) -> None:
        length = stats["length"].clamp(min=1)
        m = self.rollout_metrics
        m["return_mean"].update(stats["return"])
        m["success_rate"].update(stats["success"])
        m["invalid_action_rate"].update(stats["invalid"] / length, weight=length)
        m["episode_len"].update(stats["length"])
        m["error_rate"].update(stats["error"])
        for name in ROLLOUT_METRICS:
            self.log(
                f"rollout/{name}",
                m[name],
                on_step=False,
                on_epoch=True,
                prog_bar=name in ("success_rate", "return_mean"),
            )
        self.log("rollout/return_std", stats["return"].std(unbiased=False), on_step=False, on_epoch=True)
        self.log("rollout/distinct_completions", stats["distinct"], on_step=False, on_epoch=True)
        self.log("perf/rollout_s", stats["rollout_s"], on_step=False, on_epoch=True)
        gen_s = stats["rollout_s"].clamp(min=1e-9)
        self.log("perf/rollout_tokens_per_s", stats["generated_tokens"] / gen_s, on_step=False, on_epoch=True)
        self.log("perf/model_time_share", stats["forward_s"] / gen_s, on_step=False, on_epoch=True)

    def log(self, name, value, *args, **kwargs) -> None:  # every value here is already reduced
        kwargs.setdefault("batch_size", 1)
        super().log(name, value, *args, **kwargs)

    def training_step(self, batch: MiniBatch, batch_idx: int) -> None:
        if batch.rollout_stats is not None:
            self._log_rollout(batch.rollout_stats)
        start = time.perf_counter()
        opt = self.optimizers()
        opt.zero_grad()
        sums = {
            "loss": 0.0,
            "policy": 0.0,
            "kl": 0.0,
            "clip_frac": 0.0,
            "approx_kl": 0.0,
            "entropy": 0.0,
            "ratio": 0.0,
        }
        tokens = 0
        finite = True
        for micro in batch.micro_batches:
            logp, entropy = self.policy.completion_logprobs(micro)
            out = self.loss(
                logp, micro.old_logprobs, micro.advantages, micro.completion_mask, micro.ref_logprobs,
                num_tokens=batch.num_tokens, num_sequences=batch.num_sequences,
            )  # fmt: skip
            if not torch.isfinite(out.loss):
                finite = False
                break
            self.manual_backward(out.loss)
            n = int(micro.completion_mask.sum())
            tokens += n
            sums["loss"] += float(out.loss.detach())
            sums["policy"] += float(out.policy_loss)
            for key, value in (
                ("kl", out.kl),
                ("clip_frac", out.clip_frac),
                ("approx_kl", out.approx_kl),
                ("ratio", out.ratio_mean),
            ):
                sums[key] += float(value) * n
            sums["entropy"] += float((entropy * micro.completion_mask).sum())
        if finite and self.max_grad_norm is not None:
            self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        if finite:
            finite = all(p.grad is None or torch.isfinite(p.grad).all() for p in self.policy.parameters())
        if finite:
            opt.step()
            self.bad_updates = 0
        else:
            opt.zero_grad()
            self.bad_updates += 1
            self.skipped_updates += 1
            warnings.warn(
                f"non-finite loss or gradient: update skipped "
                f"({self.bad_updates} in a row, {self.skipped_updates} in all)",
                stacklevel=2,
            )
            if self.bad_updates >= self.max_bad_updates:
                self.trainer.should_stop = True
                raise FloatingPointError(
                    f"{self.bad_updates} consecutive non-finite updates "
                    f"(max_bad_updates={self.max_bad_updates}): "
                    "lower the learning rate or check the model dtype"
                )
        self._update_s += time.perf_counter() - start
        self._update_tokens += int(sum(m.attention_mask.sum() for m in batch.micro_batches))
        self.log(
            "loss/skipped_updates", float(self.skipped_updates), on_step=False, on_epoch=True, reduce_fx="max"
        )
        if finite and tokens:
            self.log("loss/total", sums["loss"], on_step=False, on_epoch=True)
            self.log("loss/policy", sums["policy"], on_step=False, on_epoch=True)
            for key in ("kl", "clip_frac", "approx_kl", "entropy"):
                self.log(f"loss/{key}", sums[key] / tokens, on_step=False, on_epoch=True)
            self.log("loss/ratio_mean", sums["ratio"] / tokens, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.log("perf/update_s", self._update_s, on_step=False, on_epoch=True)
        self.log(
            "perf/tokens_per_s", self._update_tokens / max(self._update_s, 1e-9), on_step=False, on_epoch=True
        )
        self.log(
            "perf/peak_memory_mb", peak_memory_mb(self.device), on_step=False, on_epoch=True, reduce_fx="max"
        )
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        self.history.append({"iteration": float(self.current_epoch), **metrics})

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluate(self, scenario: Scenario) -> dict[str, float]:
        """Play a scenario's fixed seeds (one episode per seed) and summarise them."""
        episodes = play(
            self.policy,
            scenario.game,
            scenario.seeds,
            group_size=1,
            generator=torch.Generator(device=self.policy.device).manual_seed(0),
            greedy=self.eval_greedy,
            fixed_steps=self.fixed_generation_steps,
        )
        return summarize(episodes)

    def _eval_step(self, scenario: Scenario) -> None:
        result = self.evaluate(scenario)
        self.eval_results[scenario.name] = result
        for key in ("success_rate", "return_mean", "return_stderr", "invalid_action_rate", "episode_len"):
            self.log(f"eval/{scenario.name}/{key}", result[key], on_step=False, on_epoch=True)

    def validation_step(self, batch: Scenario, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Scenario, batch_idx: int) -> None:
        self._eval_step(batch)
