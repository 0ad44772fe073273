"""The MS-GRPO objective on single-turn step samples.

Per completion token ``t`` of sample ``b`` with advantage ``A_b``::

    log_r    = clamp(logp - old_logp, -20, 20)                        # sampling distribution
    ratio    = exp(log_r)
    pg       = -min(ratio * A_b, clip(ratio, 1 - eps_low, 1 + eps_high) * A_b)
    d        = clamp(ref_full - logp_full, -20, 20)                   # untruncated distribution
    kl       = exp(d) - d - 1                                         # k3 estimator, >= 0
    loss_tok = pg + kl_coef * kl - entropy_coef * min(entropy, entropy_target)   # sampling dist.'s entropy

aggregated as a token mean (every token of the mini-batch weighs the same) or a sequence mean (each
sample's token mean, then the mean over samples).

Semantics under truncated sampling (top-k / top-p): the ratio is taken under the sampling distribution,
the one the rollout drew from, so it is exactly 1 at the first update. A token that the updated policy
ranks outside its top-k / top-p set has probability 0 there (``logp = -inf``): its bounded log-ratio makes
its ratio ``e^-20``, it gets no gradient (its term is clipped or 0), it is counted in ``support_exit_frac``,
and it counts in ``approx_kl`` with that bounded log-ratio (``e^-20 - 1 + 20``, about 19 nats): a step that
pushes sampled tokens out of the support is a large move, which ``target_kl`` and the trust region see.
The KL penalty compares the current and the reference policy on the
untruncated distribution (allowed tokens and temperature only), where every sampled token has a finite
log-prob under both. Padded positions are selected away with ``where``: nothing at them enters arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch
from torch import nn

from msgrpo.errors import require

LOG_RATIO_BOUND = 20.0
"""Bound on every log-ratio (importance and KL): ``e^20`` is far beyond any clip range; no inf reaches the loss."""


def bounded_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``log(pi / pi_old)`` at real tokens, bounded to ``+-LOG_RATIO_BOUND``; exactly 0 elsewhere. ``[B, C]``."""
    zero = logprobs.new_zeros(())
    return torch.where(real, (logprobs - old_logprobs).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND), zero)


@torch.no_grad()
def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """``(sum, count)`` of ``(ratio - 1) - log ratio`` over the real tokens, with the bounded log-ratio.

    A token outside the current truncated support (``logprobs = -inf``) counts with ``log ratio = -20``
    (about 19 nats): a step that pushes the sampled tokens out of the top-k / top-p set moved the policy
    far, and ``target_kl`` and the trust region must see it (leaving such tokens out would measure 0).
    """
    real = mask.bool()
    log_ratio = bounded_log_ratio(logprobs, old_logprobs, real)
    terms = torch.where(real, torch.exp(log_ratio) - 1.0 - log_ratio, log_ratio.new_zeros(()))
    return float(terms.sum()), int(real.sum())


def token_mean(metric: str):
    """A :class:`LossOutput` field that is a token mean logged as ``metric`` (its one name, here)."""
    return field(metadata={"metric": metric})


@dataclass
class LossOutput:
    """Loss and diagnostics (diagnostics are detached token means over real tokens). A field declared with
    :func:`token_mean` is logged under its metric name as the update's token-weighted mean: a new loss
    metric is one field here and one line in :meth:`MSGRPOLoss.forward`.

    Attributes:
        loss: Scalar to backpropagate (already divided by the mini-batch normaliser).
        policy_loss: The clipped policy-gradient part (same normalisation).
        kl: Mean k3 KL to the reference (0 without one).
        clip_frac: Fraction of tokens whose clipped term was active.
        approx_kl: Mean ``(ratio - 1) - log ratio`` over the real tokens (bounded log-ratio: a token that
            left a truncated support counts about 19 nats): how far the policy moved from the rollout policy.
        ratio_mean: Mean importance ratio.
        support_exit_frac: Fraction of tokens the current policy no longer samples (outside its top-k /
            top-p set; 0 without truncation).
        max_abs_log_ratio: Largest ``|log ratio|`` over the tokens inside the current support (at the
            first update of an iteration: how far scoring is from the rollout's sampling, ideally 0).
        num_tokens: Real completion tokens of this micro-batch (the weight of its token means).
    """

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor = token_mean("loss/kl")
    clip_frac: torch.Tensor = token_mean("loss/clip_frac")
    approx_kl: torch.Tensor = token_mean("loss/approx_kl")
    ratio_mean: torch.Tensor = token_mean("loss/ratio_mean")
    support_exit_frac: torch.Tensor = token_mean("loss/support_exit_frac")
    max_abs_log_ratio: torch.Tensor
    num_tokens: int = 0

    def token_means(self) -> dict[str, float]:
        """``metric name -> value`` of the fields declared with :func:`token_mean`."""
        return {f.metadata["metric"]: float(getattr(self, f.name)) for f in fields(self) if "metric" in f.metadata}


class MSGRPOLoss(nn.Module):
    """Clipped GRPO objective with an optional k3 KL penalty.

    Args:
        clip_eps: Lower clip range ``eps_low`` (ratio floor ``1 - clip_eps``).
        clip_eps_high: Upper clip range (ratio cap ``1 + clip_eps_high``); None = ``clip_eps``.
        kl_coef: Weight of the KL penalty to the reference policy (0 = no reference is computed).
        aggregation: ``"token-mean"`` or ``"sequence-mean"``.
        entropy_coef: Weight of an entropy bonus (0 = off): subtracts ``entropy_coef`` times the entropy
            of each completion token's next-token distribution, which keeps a policy trained from random
            weights from collapsing onto one answer before it has found the rewarding ones.
        entropy_target: With ``entropy_coef > 0``: the bonus counts each token's entropy only up to this
            many nats, so it is a floor, not a pull towards the uniform policy. A state whose distribution
            is at least this spread out gets no entropy gradient; one below it is pushed back up, so a
            policy cannot become deterministic (which makes every episode of a group the same and every
            advantage 0: no learning signal is left). None = the plain bonus on the whole entropy.
    """

    def __init__(
        self,
        clip_eps: float = 0.2,
        clip_eps_high: float | None = None,
        kl_coef: float = 0.0,
        aggregation: Literal["token-mean", "sequence-mean"] = "token-mean",
        entropy_coef: float = 0.0,
        entropy_target: float | None = None,
    ) -> None:
        super().__init__()
        require(clip_eps > 0, "clip_eps", "> 0", clip_eps)
        require(clip_eps_high is None or clip_eps_high > 0, "clip_eps_high", "> 0 or null", clip_eps_high)
        require(kl_coef >= 0, "kl_coef", ">= 0", kl_coef)
        require(entropy_coef >= 0, "entropy_coef", ">= 0", entropy_coef)
        require(entropy_target is None or entropy_target > 0, "entropy_target", "> 0 (nats) or null", entropy_target)
        require(
            entropy_target is None or entropy_coef > 0,
            "entropy_target",
            "null unless entropy_coef > 0 (the floor is the entropy bonus's cap; without a bonus it does nothing)",
            entropy_target,
        )
        require(
            aggregation in ("token-mean", "sequence-mean"),
            "aggregation",
            "'token-mean' or 'sequence-mean'",
            aggregation,
        )
        self.clip_eps = clip_eps
        self.clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
        self.kl_coef = kl_coef
        self.aggregation = aggregation
        self.entropy_coef = entropy_coef
        self.entropy_target = entropy_target

    def forward(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        ref_logprobs: torch.Tensor | None = None,
        num_tokens: float | None = None,
        num_sequences: float | None = None,
        entropy: torch.Tensor | None = None,
        full_logprobs: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss of one micro-batch.

        Args:
            logprobs: ``[B, C]`` current-policy log-probs under the sampling distribution (with gradient);
                ``-inf`` allowed for a token outside the current top-k / top-p support.
            old_logprobs: ``[B, C]`` rollout-policy log-probs.
            advantages: ``[B]`` one advantage per sample.
            mask: ``[B, C]`` 1 (or True) for real completion tokens; other positions may hold anything,
                ``inf`` and NaN included.
            ref_logprobs: ``[B, C]`` reference log-probs on the untruncated distribution; required when
                ``kl_coef > 0``.
            num_tokens: Token-mean normaliser: real tokens of the whole mini-batch (over all ranks,
                divided by the number of ranks whose gradients are averaged); default this batch's.
            num_sequences: Sequence-mean normaliser, likewise; default this batch's samples.
            entropy: ``[B, C]`` entropies of the current policy's next-token distributions (with gradient);
                required when ``entropy_coef > 0``.
            full_logprobs: ``[B, C]`` current-policy log-probs on the untruncated distribution (the KL
                term's); default ``logprobs`` (no truncation).

        Returns:
            The loss (summed over this micro-batch and divided by the mini-batch normaliser, so summing
            the losses of all micro-batches gives the mini-batch loss) and diagnostics.
        """
        real = mask.bool()  # [B, C]
        zero = logprobs.new_zeros(())

        def keep(x: torch.Tensor) -> torch.Tensor:
            return torch.where(real, x, zero)

        log_ratio = bounded_log_ratio(logprobs, old_logprobs, real)  # [B, C]
        ratio = torch.exp(log_ratio)  # [B, C]
        adv = advantages.to(logprobs.dtype)[:, None]  # [B, 1]
        unclipped = ratio * adv  # [B, C]
        clipped = torch.clamp(ratio, 1.0 - self.clip_eps, 1.0 + self.clip_eps_high) * adv  # [B, C]
        pg = -torch.minimum(unclipped, clipped)  # [B, C]
        per_token = pg
        kl = torch.zeros_like(pg)
        if self.kl_coef > 0:
            if ref_logprobs is None:
                raise ValueError("kl_coef > 0 needs ref_logprobs")
            full = logprobs if full_logprobs is None else full_logprobs
            delta = keep((ref_logprobs - full).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))  # [B, C]
            kl = torch.exp(delta) - delta - 1.0  # [B, C] k3, >= 0
            per_token = per_token + self.kl_coef * kl
        if self.entropy_coef > 0:
            if entropy is None:
                raise ValueError("entropy_coef > 0 needs the entropy")
            bonus = entropy if self.entropy_target is None else entropy.clamp(max=self.entropy_target)
            per_token = per_token - self.entropy_coef * keep(bonus)
        n_real = int(real.sum())
        if self.aggregation == "token-mean":
            denom = float(num_tokens if num_tokens is not None else max(n_real, 1))
            reduce = lambda x: keep(x).sum() / denom  # noqa: E731
        else:
            denom = float(num_sequences if num_sequences is not None else mask.shape[0])
            lengths = real.sum(-1).clamp(min=1)  # [B]
            reduce = lambda x: (keep(x).sum(-1) / lengths).sum() / denom  # noqa: E731
        loss = reduce(per_token)
        with torch.no_grad():
            n = max(n_real, 1)
            exited = real & torch.isneginf(logprobs)  # [B, C] left the current truncated support
            inside = real & ~exited
            active = ((ratio < 1.0 - self.clip_eps) & (adv < 0)) | ((ratio > 1.0 + self.clip_eps_high) & (adv > 0))
            approx = torch.where(real, (ratio - 1.0) - log_ratio, zero)
            return LossOutput(
                loss=loss,
                policy_loss=reduce(pg).detach(),
                kl=keep(kl).sum() / n,
                clip_frac=(active & real).sum() / n,
                approx_kl=approx.sum() / n,
                ratio_mean=keep(ratio).sum() / n,
                support_exit_frac=exited.sum() / n,
                max_abs_log_ratio=torch.where(inside, log_ratio.abs(), zero).max() if n_real else zero,
                num_tokens=n_real,
            )
