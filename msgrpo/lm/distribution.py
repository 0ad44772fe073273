"""The sampling distribution: the one definition that generation and scoring share.

A completion token is drawn from ``softmax(truncate(restrict(logits) / temperature))``:

* ``restrict``: tokens outside ``allowed_ids`` (constrained decoding) get ``-inf``;
* ``/ temperature``;
* ``truncate``: top-k, then nucleus (top-p) truncation, ``-inf`` outside;
* ``floor`` (optional): mixed with the uniform distribution over the allowed tokens,
  ``(1 - floor) p + floor / n``, so every allowed token keeps at least ``floor / n`` probability.

:meth:`SamplingDistribution.sampling_logprobs` is that distribution (the rollout samples from it and the
importance ratio is computed under it, so the first update's ratio is exactly 1).
:meth:`SamplingDistribution.full_logprobs` is the same without truncation (allowed tokens and temperature
only). It is the distribution the KL penalty compares with the reference policy: a sampled token always
has a finite log-prob there, under the current and the reference policy alike, while under truncation a
token the current or the reference policy ranks outside its top-k / top-p set has probability 0.

Scoring (:func:`score_tokens`) never lets a padded or out-of-support position reach arithmetic: padded
positions are selected away with ``where``, never multiplied by a mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from msgrpo.errors import require


def truncate(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask scores outside the top-k set and the nucleus with ``-inf``. ``[N, V] -> [N, V]``.

    Top-k keeps every token tied with the k-th score. The nucleus keeps the smallest prefix of the
    tokens sorted by score whose probability reaches ``top_p`` (the token that crosses it included).
    """
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = sorted_scores.softmax(-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def sample(logp: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from ``softmax(logp)`` by inverse-CDF sampling. ``[B, V] -> [B]``.

    Exact like ``torch.multinomial`` (tokens of probability 0 are never drawn) and an order of
    magnitude cheaper on CPU.
    """
    cdf = logp.exp().cumsum(-1)  # [B, V]
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)  # [B]


@dataclass
class SamplingDistribution:
    """Temperature, constrained decoding and truncation: what a completion token is drawn from.

    Attributes:
        temperature: Softmax temperature (> 0).
        top_k: Keep the k highest-scoring tokens (0 = off).
        top_p: Nucleus mass (1.0 = off).
        allowed_ids: Token ids every generated token must be one of (None = the whole vocabulary).
        floor: Exploration floor: the share of probability spread uniformly over ``allowed_ids`` (0 = off;
            needs ``allowed_ids``).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    allowed_ids: list[int] | None = None
    floor: float = 0.0
    _mask: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def settings(self, tokenizer=None) -> dict:
        """The whole distribution as plain settings (what an export writes beside the weights): temperature,
        top-k, top-p, the exploration floor and the allowed tokens (ids, and their text with ``tokenizer``)."""
        out = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
               "exploration_floor": self.floor, "allowed_token_ids": self.allowed_ids}  # fmt: skip
        if tokenizer is not None and self.allowed_ids is not None:
            out["allowed_tokens"] = tokenizer.convert_ids_to_tokens(list(self.allowed_ids))
        return out

    def __post_init__(self) -> None:
        require(self.temperature > 0, "temperature", "> 0", self.temperature)
        require(self.top_k >= 0, "top_k", ">= 0 (0 = off)", self.top_k)
        require(0.0 < self.top_p <= 1.0, "top_p", "in (0, 1] (1 = off)", self.top_p)
        require(
            0.0 <= self.floor < 1.0 and (self.floor == 0 or self.allowed_ids is not None),
            "exploration_floor",
            "in [0, 1), and above 0 only with allowed_tokens (it spreads probability over them)",
            self.floor,
        )

    @property
    def truncated(self) -> bool:
        """Whether top-k or top-p truncation is on (then sampling and full log-probs differ)."""
        return self.top_k > 0 or self.top_p < 1.0

    def _disallowed(self, scores: torch.Tensor) -> torch.Tensor:
        """``[V]`` bool, True outside ``allowed_ids`` (built once per vocabulary size and device)."""
        mask = self._mask
        if mask is None or mask.shape[0] != scores.shape[-1] or mask.device != scores.device:
            mask = torch.ones(scores.shape[-1], dtype=torch.bool, device=scores.device)
            mask[torch.tensor(self.allowed_ids, device=scores.device)] = False
            self._mask = mask
        return mask

    def _restrict(self, scores: torch.Tensor) -> torch.Tensor:
        """``-inf`` outside ``allowed_ids``. ``[..., V] -> [..., V]``."""
        return scores if self.allowed_ids is None else scores.masked_fill(self._disallowed(scores), float("-inf"))

    def full_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Allowed tokens and temperature, no truncation (float32). ``[..., V] -> [..., V]``."""
        return self._restrict(logits.float() / self.temperature)

    def sampling_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The sampling distribution's scores (``-inf`` outside its support). ``[..., V] -> [..., V]``."""
        scores = self.full_scores(logits)
        if not self.truncated:
            return scores
        flat = scores.reshape(-1, scores.shape[-1])
        return truncate(flat, self.top_k, self.top_p).reshape(scores.shape)

    def sampling_logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probs of the sampling distribution. ``[..., V] -> [..., V]``."""
        return self._floored(self.sampling_scores(logits).log_softmax(-1))

    def full_logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probs without truncation (the KL penalty's distribution). ``[..., V] -> [..., V]``."""
        return self._floored(self.full_scores(logits).log_softmax(-1))

    def _floored(self, logp: torch.Tensor) -> torch.Tensor:
        """``log((1 - floor) p + floor / n)`` at the allowed tokens, ``-inf`` elsewhere. ``[..., V] -> [..., V]``."""
        if not self.floor:
            return logp
        uniform = math.log(self.floor / len(self.allowed_ids))  # type: ignore[arg-type]
        mixed = torch.logaddexp(logp + math.log1p(-self.floor), torch.full_like(logp, uniform))
        return mixed.masked_fill(self._disallowed(logp), float("-inf"))


@dataclass
class TokenScores:
    """Per-token scores of completions under a policy.

    Attributes:
        logprobs: ``[B, C]`` log-probs under the sampling distribution; ``-inf`` for a real token outside
            the current truncated support, exactly 0 at padded positions.
        full_logprobs: ``[B, C]`` log-probs without truncation (finite at every real token; 0 at padding);
            the same tensor as ``logprobs`` when no truncation is on.
        entropy: ``[B, C]`` entropy of the sampling distribution (0 at padding), or None.
    """

    logprobs: torch.Tensor
    full_logprobs: torch.Tensor
    entropy: torch.Tensor | None = None


def score_tokens(
    dist: SamplingDistribution,
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> TokenScores:
    """Score completion tokens under ``dist``.

    Args:
        dist: The sampling distribution.
        logits: ``[B, C, V]`` logits predicting each completion token.
        targets: ``[B, C]`` completion token ids (anything at padded positions).
        mask: ``[B, C]`` true (or 1) at real completion tokens.
        with_entropy: Also compute the sampling distribution's entropy.
        entropy_grad: Keep the entropy's gradient (an entropy bonus).

    Returns:
        The scores; padded positions hold exactly 0 and carry no gradient.
    """
    real = mask.bool()
    sampling = dist.sampling_logprobs(logits)  # [B, C, V]
    # padded positions read a token inside the support (the most likely one), so nothing there is -inf
    safe = torch.where(real, targets, sampling.argmax(-1))  # [B, C]
    logp = torch.where(real, sampling.gather(-1, safe[..., None]).squeeze(-1), 0.0)  # [B, C]
    if dist.truncated:
        full = torch.where(real, dist.full_logprobs(logits).gather(-1, safe[..., None]).squeeze(-1), 0.0)
    else:
        full = logp
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            p = sampling.exp()  # [B, C, V]
            # outside the support p = 0 and log p = -inf: select the log-prob away before multiplying
            plogp = p * torch.where(p > 0, sampling, 0.0)  # [B, C, V]
            entropy = torch.where(real, -plogp.sum(-1), 0.0)  # [B, C]
    return TokenScores(logp, full, entropy)
