"""The MS-GRPO objective on single-turn step samples.

Per completion token ``t`` of sample ``b`` with advantage ``A_b``::

    ratio    = exp(logp - old_logp)
    pg       = -min(ratio * A_b, clip(ratio, 1 - eps_low, 1 + eps_high) * A_b)
    kl       = exp(ref_logp - logp) - (ref_logp - logp) - 1          # k3 estimator, >= 0
    loss_tok = pg + kl_coef * kl - entropy_coef * entropy             # entropy of the full next-token dist.

aggregated as a token mean (every token of the mini-batch weighs the same) or a sequence mean (each
sample's token mean, then the mean over samples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from msgrpo.errors import ConfigError


@dataclass
class LossOutput:
    """Loss and diagnostics (diagnostics are detached token means over real tokens).

    Attributes:
        loss: Scalar to backpropagate (already divided by the mini-batch normaliser).
        policy_loss: The clipped policy-gradient part (same normalisation).
        kl: Mean k3 KL to the reference (0 without one).
        clip_frac: Fraction of tokens whose clipped term was active.
        approx_kl: Mean ``(ratio - 1) - log ratio``: how far the policy moved from the rollout policy.
        ratio_mean: Mean importance ratio.
    """

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_frac: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor


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
    """

    def __init__(
        self,
        clip_eps: float = 0.2,
        clip_eps_high: float | None = None,
        kl_coef: float = 0.0,
        aggregation: Literal["token-mean", "sequence-mean"] = "token-mean",
        entropy_coef: float = 0.0,
    ) -> None:
        super().__init__()
        if clip_eps <= 0 or (clip_eps_high is not None and clip_eps_high <= 0):
            raise ConfigError(f"loss clip range must be > 0, got clip_eps={clip_eps}, clip_eps_high={clip_eps_high}")
        if kl_coef < 0:
            raise ConfigError(f"loss.kl_coef must be >= 0, got {kl_coef}")
        if entropy_coef < 0:
            raise ConfigError(f"loss.entropy_coef must be >= 0, got {entropy_coef}")
        if aggregation not in ("token-mean", "sequence-mean"):
            raise ConfigError(f"loss.aggregation must be 'token-mean' or 'sequence-mean', got {aggregation!r}")
        self.clip_eps = clip_eps
        self.clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
        self.kl_coef = kl_coef
        self.aggregation = aggregation
        self.entropy_coef = entropy_coef

    def forward(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        ref_logprobs: torch.Tensor | None = None,
        num_tokens: int | None = None,
        num_sequences: int | None = None,
        entropy: torch.Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss of one micro-batch.

        Args:
            logprobs: ``[B, C]`` current-policy log-probs (with gradient).
            old_logprobs: ``[B, C]`` rollout-policy log-probs.
            advantages: ``[B]`` one advantage per sample.
            mask: ``[B, C]`` 1 for real completion tokens.
            ref_logprobs: ``[B, C]`` reference log-probs; required when ``kl_coef > 0``.
            num_tokens: Real tokens in the whole mini-batch (token-mean normaliser); default this batch's.
            num_sequences: Samples in the whole mini-batch (sequence-mean normaliser); default this batch's.
            entropy: ``[B, C]`` entropies of the current policy's next-token distributions (with gradient);
                required when ``entropy_coef > 0``.

        Returns:
            The loss (summed over this micro-batch and divided by the mini-batch normaliser, so summing
            the losses of all micro-batches gives the mini-batch loss) and diagnostics.
        """
        mask = mask.to(logprobs.dtype)
        log_ratio = (logprobs - old_logprobs) * mask  # [B, C]
        ratio = torch.exp(log_ratio)  # [B, C]
        adv = advantages.to(logprobs.dtype)[:, None]  # [B, 1]
        unclipped = ratio * adv  # [B, C]
        clipped = torch.clamp(ratio, 1.0 - self.clip_eps, 1.0 + self.clip_eps_high) * adv  # [B, C]
        per_token = -torch.minimum(unclipped, clipped)  # [B, C]
        pg_per_token = per_token
        kl = torch.zeros_like(per_token)
        if self.kl_coef > 0:
            if ref_logprobs is None:
                raise ValueError("kl_coef > 0 needs ref_logprobs")
            delta = (ref_logprobs - logprobs) * mask  # [B, C]
            kl = torch.exp(delta) - delta - 1.0  # [B, C] k3, >= 0
            per_token = per_token + self.kl_coef * kl
        if self.entropy_coef > 0:
            if entropy is None:
                raise ValueError("entropy_coef > 0 needs the entropy")
            per_token = per_token - self.entropy_coef * entropy
        if self.aggregation == "token-mean":
            denom = float(num_tokens if num_tokens is not None else mask.sum().clamp(min=1).item())
            reduce = lambda x: (x * mask).sum() / denom  # noqa: E731
        else:
            denom = float(num_sequences if num_sequences is not None else mask.shape[0])
            lengths = mask.sum(-1).clamp(min=1)  # [B]
            reduce = lambda x: ((x * mask).sum(-1) / lengths).sum() / denom  # noqa: E731
        loss = reduce(per_token)
        with torch.no_grad():
            n = mask.sum().clamp(min=1)
            active = ((ratio < 1.0 - self.clip_eps) & (adv < 0)) | ((ratio > 1.0 + self.clip_eps_high) & (adv > 0))
            return LossOutput(
                loss=loss,
                policy_loss=reduce(pg_per_token).detach(),
                kl=(kl * mask).sum() / n,
                clip_frac=(active.to(mask.dtype) * mask).sum() / n,
                approx_kl=(((ratio - 1.0) - log_ratio) * mask).sum() / n,
                ratio_mean=(ratio * mask).sum() / n,
            )
