"""MSGRPOModule: the LAP policy and the MS-GRPO loss as a LightningModule."""

from __future__ import annotations

import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

import msgrpo.quiet  # noqa: F401  (library notices that are not about the user's settings)
from msgrpo.callbacks import checkpoint_dir
from msgrpo.errors import ConfigError, require
from msgrpo.evaluation import Scenario, summarize
from msgrpo.loss import LossOutput, MSGRPOLoss
from msgrpo.policy import LanguagePolicy
from msgrpo.rollout import play
from msgrpo.types import Episode, MicroBatch, MiniBatch

ROLLOUT_METRICS = ("return_mean", "success_rate", "invalid_action_rate", "episode_len", "error_rate")
CHECKPOINT_KEY = "msgrpo"
"""Key of the framework's own entries in a Lightning checkpoint."""

T = TypeVar("T")


@dataclass
class EpisodeRecord:
    """What :func:`~msgrpo.evaluation.summarize` needs of an episode: small enough to gather across ranks.

    Attributes:
        total_reward: The episode return.
        success: Whether the game counted it a success.
        length: Steps taken.
        invalid_steps: Steps whose completion named no valid action.
        error: ``"error"`` when the environment raised, else None.
    """

    total_reward: float
    success: bool
    length: int
    invalid_steps: int
    error: str | None = None

    @classmethod
    def of(cls, episode: Episode) -> EpisodeRecord:
        return cls(
            episode.total_reward,
            bool(episode.success),
            episode.length,
            episode.invalid_steps,
            None if episode.error is None else "error",
        )


def _default_optimizer(params):
    return torch.optim.AdamW(params, lr=1e-4)


class _LockstepPolicy:
    """A :class:`LanguagePolicy` whose generate calls are made by every rank together (see
    :meth:`MSGRPOModule.lockstep`); everything else is the policy's own."""

    def __init__(self, policy: LanguagePolicy, any_rank: Callable[[bool], bool]) -> None:
        self._policy = policy
        self._any_rank = any_rank

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def generate(self, prompts, generator=None, greedy=False, fixed_steps=True):
        self._any_rank(True)  # this rank is live: the others join with dummy calls
        return self._policy.generate(prompts, generator=generator, greedy=greedy, fixed_steps=True)

    def finish(self) -> None:
        """Make dummy calls while any other rank still plays."""
        dummy = [torch.tensor([self._policy.tokenizer.pad_token_id])]
        while self._any_rank(False):
            self._policy.generate(dummy, greedy=True, fixed_steps=True)


def micro_batch_loss(
    policy: LanguagePolicy,
    loss: MSGRPOLoss,
    micro: MicroBatch,
    mini: MiniBatch,
    normalisers: tuple[float, float] | None = None,
) -> tuple[LossOutput, torch.Tensor]:
    """The loss of one micro-batch, normalised by its whole mini-batch (the training step's inner loop).

    Log-probs are computed once per distinct sequence (``[U, C]``) and expanded to every sample
    (``[B, C]``), see :attr:`MicroBatch.rows`.

    Args:
        policy: The policy to score with.
        loss: The loss.
        micro: The micro-batch.
        mini: The mini-batch it belongs to.
        normalisers: ``(tokens, sequences)`` to divide by; default the mini-batch's own counts. Under
            data parallelism: the counts over all ranks divided by the number of ranks, so that the
            averaged gradient is that of the global token (or sequence) mean.

    Returns:
        The loss output and the per-sample entropies ``[B, C]`` (with gradient only under an entropy bonus).
    """
    scores = policy.completion_logprobs(micro, entropy_grad=loss.entropy_coef > 0)  # [U, C]
    expand = micro.per_sample  # [U, C] -> [B, C]
    tokens, sequences = normalisers or (mini.num_tokens, mini.num_sequences)
    entropy = expand(scores.entropy)  # type: ignore[arg-type]
    out = loss(
        expand(scores.logprobs), micro.old_logprobs, micro.advantages, micro.completion_mask, micro.ref_logprobs,
        num_tokens=tokens, num_sequences=sequences, entropy=entropy, full_logprobs=expand(scores.full_logprobs),
    )  # fmt: skip
    return out, entropy


def data_parallel_normalisers(
    batch: MiniBatch, world: int, reduce_sum: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[float, float]:
    """``(tokens, sequences)`` to normalise a rank's share of a mini-batch by.

    The counts over all ranks (``reduce_sum`` all-reduces a tensor) divided by the number of ranks: data
    parallel strategies average the ranks' gradients, so the result is the gradient of the global token
    (or sequence) mean of the mini-batch, equal to one process training on all of its samples.

    Args:
        batch: This rank's mini-batch.
        world: Number of ranks.
        reduce_sum: Sums a ``[2]`` float64 tensor over the ranks (identity for one process).
    """
    counts = torch.tensor([batch.num_tokens, batch.num_sequences], dtype=torch.float64)
    if world > 1:
        counts = reduce_sum(counts)
    tokens, sequences = (counts / world).tolist()
    return tokens, sequences


def _grads_finite(module: nn.Module) -> bool:
    """Whether every local gradient (this rank's shard under FSDP) is finite."""
    for p in module.parameters():
        g = p.grad
        if g is None:
            continue
        g = g.to_local() if hasattr(g, "to_local") else g
        if not torch.isfinite(g).all():
            return False
    return True


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
        lr_scheduler: Learning-rate scheduler factory over the optimizer, stepped once per MS-GRPO
            iteration (epoch), e.g. ``torch.optim.lr_scheduler.LinearLR``; None = constant rate.
        target_kl: Early stopping of an iteration's updates (as in PPO implementations): when a
            mini-batch finds the policy already further than this approximate KL from the rollout policy,
            its update and the iteration's remaining ones are skipped (``loss/kl_stopped`` counts the
            skipped updates). Guards a nearly solved policy against one oversized update. None = off.
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
    ) -> None:
        super().__init__()
        require(max_grad_norm is None or max_grad_norm > 0, "max_grad_norm", "> 0 or null", max_grad_norm)
        require(target_kl is None or target_kl > 0, "target_kl", "> 0 or null", target_kl)
        require(max_bad_updates >= 1, "max_bad_updates", ">= 1", max_bad_updates)
        self.automatic_optimization = False
        self.policy = policy
        self.loss = loss or MSGRPOLoss()
        if self.loss.kl_coef > 0:
            # now, before any training or checkpoint restore: the KL anchor is the initial policy, in a
            # resumed run too (a copy made after Lightning restored a checkpoint would be the checkpoint)
            self.policy.enable_reference()
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.target_kl = target_kl
        self._kl_stopped = 0
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
        self._updated = False

    # ----- distribution --------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """``(global rank, world size)``; ``(0, 1)`` outside a trainer."""
        trainer = self._trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _strategy_kind(self) -> str:
        """``"fsdp1"`` (Lightning's ``fsdp``), ``"fsdp2"`` (``ModelParallelStrategy``) or ``"other"``."""
        trainer = self._trainer
        if trainer is None:
            return "other"
        from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

        if isinstance(trainer.strategy, FSDPStrategy):
            return "fsdp1"
        if isinstance(trainer.strategy, ModelParallelStrategy):
            return "fsdp2"
        return "other"

    def setup(self, stage: str) -> None:
        if self._strategy_kind() != "other" and self._world()[1] > 1:
            # sharded parameters are gathered inside every forward pass: every rank must run as many
            # passes, so generate calls always run max_new_tokens of them (and run in lockstep), and
            # scoring adds no data-dependent shared-prefix pass
            self.fixed_generation_steps = True
            self.policy.lockstep = self.fixed_generation_steps

    def configure_model(self) -> None:
        """Shard the policy with FSDP2 (``fully_shard``) when the strategy provides a device mesh.

        Under :class:`~lightning.pytorch.strategies.ModelParallelStrategy` every decoder layer (the model's
        ``_no_split_modules`` classes) becomes one FSDP unit and the rest of the model the root unit.
        Every process is a data-parallel rank (it plays its own episodes), so the model is sharded over
        the whole world; tensor parallelism is not used.
        """
        mesh = self.device_mesh
        if mesh is None or getattr(self, "_fully_sharded", False):
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if mesh.ndim != 1:
            if mesh["tensor_parallel"].size() > 1:
                warnings.warn(
                    "msgrpo does not use tensor parallelism: the policy is sharded FSDP-style over all "
                    f"{mesh.size()} processes (set ModelParallelStrategy(data_parallel_size={mesh.size()}, "
                    "tensor_parallel_size=1) to silence this)",
                    stacklevel=2,
                )
            mesh = init_device_mesh(mesh.device_type, (mesh.size(),), mesh_dim_names=("data_parallel",))
        for model in (self.policy.model, self.policy.reference):  # the KL reference is sharded alike
            if model is None:
                continue
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            layer_classes = set(getattr(base, "_no_split_modules", None) or [])
            layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
            for layer in layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
        self._fully_sharded = True
        self.fixed_generation_steps = mesh.size() > 1
        self.policy.lockstep = self.fixed_generation_steps

    def run_sharded(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (rollouts: generation and reference scoring) where the strategy's model can run.

        Under Lightning's ``fsdp`` strategy (FSDP1) forward passes outside the wrapped root's own forward
        are not allowed, so ``fn`` runs inside it (Lightning's forward redirection); elsewhere it is
        simply called.
        """
        trainer = self._trainer
        if trainer is None:
            return fn()
        strategy = trainer.strategy
        plugin = trainer.precision_plugin
        # the precision plugin's context, autocast under ``*-mixed``: rollouts run with the numerics of
        # the update (the KV cache takes the dtype of the keys it first stores)
        with plugin.forward_context():
            if self._strategy_kind() == "fsdp1" and strategy.model is not self:
                return strategy._forward_redirection(strategy.model, self, "_call", fn)
            return fn()

    def _call(self, fn: Callable[[], T]) -> T:
        return fn()

    @contextmanager
    def lockstep(self) -> Iterator[LanguagePolicy]:
        """The policy to play episodes with: under sharded strategies, one whose generate calls every
        rank makes together.

        Sharded parameters are gathered inside every forward pass, so every rank must run the same
        passes. Each generate call already runs exactly ``max_new_tokens`` passes
        (``fixed_generation_steps``); in addition, before each call the ranks agree (one all-reduce)
        whether any of them still has a live episode, and a rank whose episodes have all ended keeps
        making dummy calls until every rank is done.
        """
        _, world = self._world()
        if world == 1 or not self.fixed_generation_steps:
            yield self.policy
            return
        agent = _LockstepPolicy(self.policy, self._any_rank)
        yield agent  # type: ignore[misc]
        agent.finish()

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (a collective)."""
        value = torch.tensor(int(flag), device=self.device)
        return bool(self.trainer.strategy.reduce(value, reduce_op="max"))

    def _clip_gradients(self, opt) -> None:
        if self._strategy_kind() == "fsdp1":  # Lightning's FSDPPrecision refuses norm clipping
            self.trainer.strategy.model.clip_grad_norm_(self.max_grad_norm)
        else:  # plain, DDP, FSDP2 (DTensor gradients: torch computes the global norm)
            self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")

    # ----- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the framework's counters and history; under LoRA keep only the trainable (adapter)
        weights of the policy: the frozen base is rebuilt from ``model_name_or_path`` on load.

        Sharded strategies (``ModelParallelStrategy``, ``fsdp``) load the weights themselves, strictly,
        before any hook runs: their checkpoints keep every weight (each rank writes its own shard)."""
        adapter_only = self.policy.uses_lora and "state_dict" in checkpoint and self._strategy_kind() == "other"
        if adapter_only:
            trainable = {f"policy.{n}" for n, p in self.policy.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {
                k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("policy.") or k in trainable
            }
        checkpoint[CHECKPOINT_KEY] = {
            "adapter_only": adapter_only,
            "bad_updates": self.bad_updates,
            "skipped_updates": self.skipped_updates,
            "history": list(self.history),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get(CHECKPOINT_KEY, {})
        if info.get("adapter_only") and "state_dict" in checkpoint:
            trainable = {f"policy.{n}" for n, p in self.policy.named_parameters() if p.requires_grad}
            missing = sorted(trainable - set(checkpoint["state_dict"]))
            if missing:
                raise ConfigError(
                    f"the checkpoint's LoRA adapter lacks {len(missing)} weights of this policy (e.g. "
                    f"{missing[0]}): load it with the LoRA settings it was trained with"
                )
            # fill the frozen base weights in from this module (built from the same base model)
            full = {k: v for k, v in self.state_dict().items() if k.startswith("policy.")}
            full.update(checkpoint["state_dict"])
            checkpoint["state_dict"] = full
        self.bad_updates = info.get("bad_updates", 0)
        self.skipped_updates = info.get("skipped_updates", 0)
        self.history = list(info.get("history", []))

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._update_s, self._update_tokens = 0.0, 0
        self._kl_stopped = 0
        self._updated = False

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

    def log(self, name, value, *args, **kwargs) -> None:
        # Every value is one number per rank and iteration (batch_size 1). Across ranks: metric objects
        # (rollout/*) sync their states; plain numbers are averaged (or max-reduced) at the epoch end.
        kwargs.setdefault("batch_size", 1)
        kwargs.setdefault("sync_dist", self._world()[1] > 1)
        super().log(name, value, *args, **kwargs)

    def training_step(self, batch: MiniBatch, batch_idx: int) -> None:
        if batch.rollout_stats is not None:
            self._log_rollout(batch.rollout_stats)
        if self._kl_stopped:  # an earlier mini-batch of this iteration hit target_kl (same on every rank)
            self._kl_stopped += 1
            return
        start = time.perf_counter()
        try:
            self._update(batch)
        finally:
            self._update_s += time.perf_counter() - start
            self._update_tokens += int(sum(m.attention_mask.sum() for m in batch.micro_batches))

    def _normalisers(self, batch: MiniBatch) -> tuple[float, float]:
        """``(tokens, sequences)`` of the mini-batch over all ranks, divided by the number of ranks.

        DDP and FSDP average the ranks' gradients, so dividing each rank's token sum by this makes the
        gradient that of the global token (sequence) mean, whatever the split of samples over ranks, and
        blank padding mini-batches add nothing.
        """
        _, world = self._world()
        return data_parallel_normalisers(
            batch, world, lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()
        )

    def _update(self, batch: MiniBatch) -> None:
        """One optimizer step over the mini-batch's micro-batches (gradients accumulated)."""
        normalisers = self._normalisers(batch)
        if normalisers[0] == 0:  # no real token on any rank (a no-op iteration): nothing to learn from
            return
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
            "support_exit": 0.0,
        }
        tokens = 0
        finite = True
        onpolicy_error = 0.0
        for micro in batch.micro_batches:
            out, entropy = micro_batch_loss(self.policy, self.loss, micro, batch, normalisers)
            if not torch.isfinite(out.loss):
                finite = False
                if self._world()[1] == 1:
                    break
                # other ranks wait for this backward (DDP all-reduce, FSDP reduce-scatter): run it; the
                # update is skipped on every rank below
            self.manual_backward(out.loss)
            n = out.num_tokens
            tokens += n
            sums["loss"] += float(out.loss.detach())
            sums["policy"] += float(out.policy_loss)
            for key, value in (
                ("kl", out.kl),
                ("clip_frac", out.clip_frac),
                ("approx_kl", out.approx_kl),
                ("ratio", out.ratio_mean),
                ("support_exit", out.support_exit_frac),
            ):
                sums[key] += float(value) * n
            onpolicy_error = max(onpolicy_error, float(out.max_abs_log_ratio))
            sums["entropy"] += float(torch.where(micro.completion_mask.bool(), entropy.detach(), 0.0).sum())
        finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not self._updated:  # the iteration's first update: scored exactly as the rollout sampled?
            self._updated = True
            self.log("loss/onpolicy_error", onpolicy_error, on_step=False, on_epoch=True, reduce_fx="max")
        if finite and self.target_kl is not None and self._moved_too_far(sums["approx_kl"] / max(tokens, 1)):
            opt.zero_grad()
            self._kl_stopped = 1
            return
        if finite and self.max_grad_norm is not None:
            self._clip_gradients(opt)
        if finite:
            finite = self.trainer.strategy.reduce_boolean_decision(_grads_finite(self.policy), all=True)
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
                path = checkpoint_dir(self.trainer) / "nonfinite-stop.ckpt"
                self.trainer.save_checkpoint(path)
                raise FloatingPointError(
                    f"{self.bad_updates} consecutive non-finite updates "
                    f"(max_bad_updates={self.max_bad_updates}); weights as of the last good update saved to "
                    f"{path}. Lower the learning rate or check the model dtype"
                )
        self.log("loss/skipped_updates", float(self.skipped_updates), on_step=False, on_epoch=True, reduce_fx="max")
        if finite:  # the same decision on every rank: every rank logs the same keys
            tokens = max(tokens, 1)
            self.log("loss/total", sums["loss"], on_step=False, on_epoch=True)
            self.log("loss/policy", sums["policy"], on_step=False, on_epoch=True)
            for key in ("kl", "clip_frac", "approx_kl", "entropy"):
                self.log(f"loss/{key}", sums[key] / tokens, on_step=False, on_epoch=True)
            self.log("loss/ratio_mean", sums["ratio"] / tokens, on_step=False, on_epoch=True)
            self.log("loss/support_exit_frac", sums["support_exit"] / tokens, on_step=False, on_epoch=True)

    def _moved_too_far(self, approx_kl: float) -> bool:
        """Whether the policy is further than ``target_kl`` from the rollout policy (mean over ranks)."""
        value = torch.tensor(approx_kl, device=self.device)
        if self._world()[1] > 1:
            value = self.trainer.strategy.reduce(value, reduce_op="mean")
        return float(value) > self.target_kl  # type: ignore[operator]

    def on_train_epoch_end(self) -> None:
        self.log("loss/kl_stopped", float(self._kl_stopped), on_step=False, on_epoch=True, reduce_fx="max")
        self.log("loss/lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # manual optimization: Lightning leaves stepping to the module
            scheduler.step()
        self.log("perf/update_s", self._update_s, on_step=False, on_epoch=True)
        self.log("perf/tokens_per_s", self._update_tokens / max(self._update_s, 1e-9), on_step=False, on_epoch=True)
        self.log("perf/peak_memory_mb", peak_memory_mb(self.device), on_step=False, on_epoch=True, reduce_fx="max")
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        self.history.append({"iteration": float(self.current_epoch), **metrics})

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluate(self, scenario: Scenario) -> dict[str, float]:
        """Play a scenario's fixed seeds (one episode per seed) and summarise them.

        With several processes each rank plays every ``world``-th seed, the per-episode results are
        gathered and summarised in seed order on every rank: with greedy decoding (the default) the
        result is that of one process (sampled evaluation draws differ with the split).
        """
        rank, world = self._world()
        index = list(range(rank, len(scenario.seeds), world))
        with self.lockstep() as agent:
            episodes = play(
                agent,
                scenario.game,
                [scenario.seeds[i] for i in index],
                group_size=1,
                generator=torch.Generator(device=self.policy.device).manual_seed(0),
                greedy=self.eval_greedy,
                fixed_steps=self.fixed_generation_steps,
            )
        records = [EpisodeRecord.of(e) for e in episodes]
        if world > 1:
            records = self._gather_records(index, records, len(scenario.seeds))
        return summarize(records)

    def _gather_records(
        self, index: Sequence[int], records: Sequence[EpisodeRecord], total: int
    ) -> list[EpisodeRecord]:
        """All ranks' episode records, in seed order (float64 rows: index, return, success, length,
        invalid steps, error; padded rows have index -1)."""
        _, world = self._world()
        rows = torch.full((-(-total // world), 6), -1.0, dtype=torch.float64)
        for row, (i, r) in enumerate(zip(index, records)):
            rows[row] = torch.tensor(
                [i, r.total_reward, r.success, r.length, r.invalid_steps, r.error is not None],
                dtype=torch.float64,
            )
        gathered = self.all_gather(rows.to(self.device)).reshape(-1, 6).cpu()  # [world * k, 6]
        gathered = gathered[gathered[:, 0] >= 0]
        gathered = gathered[gathered[:, 0].argsort()]
        return [
            EpisodeRecord(float(r[1]), bool(r[2]), int(r[3]), int(r[4]), "error" if r[5] else None)
            for r in gathered.tolist()
        ]

    def _eval_step(self, scenario: Scenario) -> None:
        result = self.evaluate(scenario)
        self.eval_results[scenario.name] = result
        for key in ("success_rate", "return_mean", "return_stderr", "invalid_action_rate", "episode_len"):
            # identical on every rank (gathered): "max" keeps the value exact where a mean could round
            self.log(f"eval/{scenario.name}/{key}", result[key], on_step=False, on_epoch=True, reduce_fx="max")

    def validation_step(self, batch: Scenario, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Scenario, batch_idx: int) -> None:
        self._eval_step(batch)
