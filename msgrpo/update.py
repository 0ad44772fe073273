"""The update of one mini-batch in small named parts, each usable without a Trainer.

:class:`~msgrpo.module.MSGRPOModule` strings them together: :func:`has_signal` (skip a step that could
only move the weights through Adam's momentum), :func:`accumulate` (gradient accumulation over the
micro-batches, normalised by :func:`data_parallel_normalisers`), :func:`grads_finite` and
:class:`NonFiniteGuard` (skip a non-finite update), and :class:`TrustRegion` (undo and retry a step that
moved the policy too far).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from msgrpo.loss import LossOutput, MSGRPOLoss, approx_kl
from msgrpo.policy import LanguagePolicy
from msgrpo.types import MicroBatch, MiniBatch


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


def has_signal(batch: MiniBatch, loss: MSGRPOLoss) -> bool:
    """Whether the mini-batch can give a non-zero gradient on this rank: a non-zero advantage at a real
    token, or a KL or entropy term.

    Without one, an optimizer step would still move the weights (Adam's momentum and weight decay with a
    zero gradient): the update makes no step at all, and skips the forward and backward passes too. A KL
    or entropy term may still have an exactly zero gradient (the policy at its reference; every entropy
    above ``entropy_target``): :func:`grads_nonzero` catches those after the backward pass.
    """
    if loss.kl_coef > 0 or loss.entropy_coef > 0:
        return True
    return any(bool((m.advantages != 0).any()) for m in batch.micro_batches if m.num_tokens)


@dataclass
class UpdateStats:
    """What one mini-batch's update measured (sums over its micro-batches).

    Attributes:
        tokens: Real completion tokens.
        loss: Summed normalised loss (the mini-batch loss).
        policy: Summed normalised policy-gradient loss.
        sums: ``metric name -> token-weighted sum``: the loss's token means
            (:meth:`~msgrpo.loss.LossOutput.token_means`), ``loss/entropy`` and ``loss/advantage_mean``. The
            latter is the update's net push on whatever was sampled: 0 when the advantages are centred over
            the trained tokens; positive when long episodes are the better ones and each episode is centred
            once (``EpisodeReturn(stats_over="episodes")`` without ``length_neutral``: a survivor's 8 steps
            against a loser's 3), which makes every sampled move more likely, right or wrong, and drains
            entropy without learning.
        onpolicy_error: Largest ``|log ratio|`` seen.
        finite: Every micro-batch loss was finite.
    """

    tokens: int = 0
    loss: float = 0.0
    policy: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    onpolicy_error: float = 0.0
    finite: bool = field(default=True)

    def add(self, out: LossOutput, entropy: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> None:
        """Add one micro-batch's loss output, its per-sample entropies ``[B, C]`` (real tokens: ``mask``)
        and its samples' advantages ``[B]``."""
        n = out.num_tokens
        self.tokens += n
        self.loss += float(out.loss.detach())
        self.policy += float(out.policy_loss)
        sums = {name: value * n for name, value in out.token_means().items()}
        sums["loss/entropy"] = float(torch.where(mask.bool(), entropy.detach(), 0.0).sum())
        sums["loss/advantage_mean"] = float((advantages.reshape(-1, 1) * mask).sum())
        for name, value in sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.onpolicy_error = max(self.onpolicy_error, float(out.max_abs_log_ratio))

    def mean(self, name: str) -> float:
        """The token mean of metric ``name`` (``"loss/approx_kl"``, ...); 0 with no token."""
        return self.sums.get(name, 0.0) / max(self.tokens, 1)

    def metrics(self) -> dict[str, float]:
        """``loss/*`` metrics of this update."""
        return {"loss/total": self.loss, "loss/policy": self.policy, **{name: self.mean(name) for name in self.sums}}


def accumulate(
    policy: LanguagePolicy,
    loss: MSGRPOLoss,
    batch: MiniBatch,
    normalisers: tuple[float, float],
    backward: Callable[[torch.Tensor], None],
    stop_at_nonfinite: bool = True,
) -> UpdateStats:
    """Gradient accumulation: the loss and backward pass of every micro-batch of the mini-batch.

    Args:
        policy: The policy.
        loss: The loss.
        batch: The mini-batch.
        normalisers: ``(tokens, sequences)`` (:func:`data_parallel_normalisers`).
        backward: Backpropagates a loss (the module's ``manual_backward``).
        stop_at_nonfinite: Stop at the first non-finite loss (one process). With several ranks every
            backward pass must still run (the others wait for its all-reduce); the step is skipped after.
    """
    stats = UpdateStats()
    for micro in batch.micro_batches:
        out, entropy = micro_batch_loss(policy, loss, micro, batch, normalisers)
        if not torch.isfinite(out.loss):
            stats.finite = False
            if stop_at_nonfinite:
                break
        backward(out.loss)
        stats.add(out, entropy, micro.completion_mask, micro.advantages)
    return stats


def grads_finite(module: nn.Module) -> bool:
    """Whether every local gradient (this rank's shard under FSDP) is finite."""
    for p in module.parameters():
        g = p.grad
        if g is None:
            continue
        g = g.to_local() if hasattr(g, "to_local") else g
        if not torch.isfinite(g).all():
            return False
    return True


def grads_nonzero(module: nn.Module) -> bool:
    """Whether any local gradient (this rank's shard under FSDP) has a non-zero entry. An exactly zero
    gradient gets no optimizer step: Adam would still move the weights through its momentum and weight
    decay."""
    for p in module.parameters():
        g = p.grad
        if g is None:
            continue
        g = g.to_local() if hasattr(g, "to_local") else g
        if bool(g.any()):
            return True
    return False


@torch.no_grad()
def approx_kl_of(policy: LanguagePolicy, batch: MiniBatch) -> float:
    """Approximate KL of the policy from the rollout policy on ``batch``'s tokens (one forward pass)."""
    total, tokens = 0.0, 0
    for micro in batch.micro_batches:
        logp = micro.per_sample(policy.completion_logprobs(micro).logprobs)  # [B, C]
        part, count = approx_kl(logp, micro.old_logprobs, micro.completion_mask)
        total, tokens = total + part, tokens + count
    return total / max(tokens, 1)


@dataclass
class NonFiniteGuard:
    """Skips updates whose loss or gradient is not finite, and stops a run that only makes such updates.

    Attributes:
        max_bad: Consecutive skipped updates after which the run stops.
        bad: Skipped updates in a row.
        skipped: Skipped updates in all.
    """

    max_bad: int
    bad: int = 0
    skipped: int = 0

    def passed(self) -> None:
        """A finite update: the count of bad ones in a row starts again."""
        self.bad = 0

    def skip(self, save_checkpoint: Callable[[], Any]) -> None:
        """Count a skipped update with a warning; after ``max_bad`` in a row save a checkpoint (the weights
        of the last good update, since none of the bad ones moved them) and raise ``FloatingPointError``."""
        self.bad += 1
        self.skipped += 1
        warnings.warn(
            f"non-finite loss or gradient: update skipped ({self.bad} in a row, {self.skipped} in all)", stacklevel=4
        )
        if self.bad >= self.max_bad:
            path = save_checkpoint()
            raise FloatingPointError(
                f"{self.bad} consecutive non-finite updates (max_bad_updates={self.max_bad}); weights as of the "
                f"last good update saved to {path}. Lower the learning rate or check the model dtype"
            )


@dataclass
class Snapshot:
    """The trainable parameters and the optimizer state before a step, to undo it."""

    params: list[tuple[torch.Tensor, torch.Tensor]]
    optimizer: Any
    state: dict[str, Any]

    @classmethod
    def take(cls, policy: nn.Module, optimizer: Any) -> Snapshot:
        optimizer = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside Lightning's wrapper
        params = [(p, p.detach().clone()) for p in policy.parameters() if p.requires_grad]
        return cls(params, optimizer, copy.deepcopy(optimizer.state_dict()))

    @torch.no_grad()
    def restore(self) -> None:
        for p, saved in self.params:
            p.copy_(saved)
        self.optimizer.load_state_dict(copy.deepcopy(self.state))  # the step mutates the state it is given


@dataclass
class TrustRegion:
    """Backtracking steps: undo a step after which the policy is further than ``max_kl`` from the rollout
    policy (approximate KL, measured by one more forward pass) and retry it with a smaller learning rate.

    Attributes:
        max_kl: The region's size.
        retries: Smaller steps tried after an overshoot (0: undo and give up at once).
    """

    max_kl: float
    retries: int = 3

    def step(
        self,
        optimizer: Any,
        policy: nn.Module,
        measure: Callable[[], float],
        changed: Callable[[], None] = lambda: None,
    ) -> tuple[bool, int]:
        """Step ``optimizer`` (gradients already accumulated) inside the region.

        Args:
            optimizer: The optimizer (a Lightning wrapper or a torch optimizer).
            policy: The module whose trainable parameters the optimizer steps.
            measure: The approximate KL after the step (the same on every rank).
            changed: Called whenever the weights changed: after each try's step and after each undo (the
                policy's :meth:`~msgrpo.policy.LanguagePolicy.weights_changed`, for an engine's copy).

        Returns:
            ``(landed, undone)``: whether a step stayed inside the region (else the parameters and
            optimizer state are as before), and how many tries were undone.
        """
        before = Snapshot.take(policy, optimizer)
        rates = [g["lr"] for g in before.optimizer.param_groups]

        def scale_lr(factor: float) -> None:  # (restoring the state replaces the param group dicts)
            for g, lr in zip(before.optimizer.param_groups, rates):
                g["lr"] = lr * factor

        factor, undone = 1.0, 0
        try:
            for _ in range(self.retries + 1):
                scale_lr(factor)
                optimizer.step()
                changed()
                kl = measure()
                if kl <= self.max_kl:
                    return True, undone
                before.restore()
                changed()
                undone += 1
                # the KL of an Adam step grows about linearly with its size (measured; faster for large
                # steps): aim just inside the region, at least halve
                factor *= min(0.5, 0.9 * self.max_kl / kl)
            return False, undone
        finally:
            scale_lr(1.0)
