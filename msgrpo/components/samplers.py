"""Episode samplers: which episodes of a rollout are trained on.

MS-GRPO generates more episodes than it trains on and draws the trained ones with probability
proportional to ``|A_i|`` (:class:`AbsoluteAdvantageWeighted`). The others are ablations:
:class:`All`, :class:`Uniform`, :class:`TopAbsAdvantage` (deterministic top-k by ``|A|``) and
:class:`GroupVarianceFilter` (RAGEN-style: keep the groups whose returns vary most).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch


class EpisodeSampler(ABC):
    """Chooses episode indices to train on."""

    @abstractmethod
    def sample(
        self,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        group_ids: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Pick episodes.

        Args:
            advantages: ``[E]`` episode-level advantages.
            returns: ``[E]`` episode returns.
            group_ids: ``[E]`` group of each episode.
            generator: The seeded RNG to draw with (its state is checkpointed).

        Returns:
            ``[K]`` long indices into the ``E`` episodes (repeats allowed with replacement).
        """

    def validate(self, num_episodes: int) -> None:
        """Raise ``ValueError`` when this sampler cannot work on ``num_episodes`` episodes per rollout."""
        return None  # the default sampler works on any number of episodes


def _check_positive_int(name: str, what: str, k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"{name}: {what} must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"{name}: {what} must be >= 1, got {k}")


def _check_count(
    name: str,
    k: int,
    available: int,
    replacement: bool,
    what: str = "num_episodes",
    pool: str = "episodes generated per iteration (num_groups x group_size)",
    hint: str = "lower num_episodes or set replacement=true",
) -> None:
    _check_positive_int(name, what, k)
    if not replacement and k > available:
        raise ValueError(f"{name}: {what}={k} exceeds the {available} {pool}; {hint}")


def _check_inputs(name: str, advantages: torch.Tensor, returns: torch.Tensor, group_ids: torch.Tensor) -> None:
    if advantages.dim() != 1:
        raise ValueError(f"{name}: advantages must have shape [E], got {tuple(advantages.shape)}")
    e = advantages.numel()
    if returns.shape != (e,) or group_ids.shape != (e,):
        raise ValueError(
            f"{name}: advantages {tuple(advantages.shape)}, returns {tuple(returns.shape)} and "
            f"group_ids {tuple(group_ids.shape)} must all have shape [E]"
        )


def _abs_weights(name: str, advantages: torch.Tensor) -> torch.Tensor:
    weights = advantages.detach().abs().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(weights).all():
        raise ValueError(f"{name}: advantages contain NaN or inf")
    return weights


class All(EpisodeSampler):
    """Train on every episode."""

    def sample(self, advantages, returns, group_ids, generator):
        return torch.arange(advantages.numel())


class Uniform(EpisodeSampler):
    """Draw ``num_episodes`` episodes uniformly.

    Args:
        num_episodes: How many to draw (``>= 1``; at most the episodes per rollout without replacement).
        replacement: Draw with replacement.
    """

    def __init__(self, num_episodes: int = 32, replacement: bool = False) -> None:
        _check_positive_int(type(self).__name__, "num_episodes", num_episodes)
        self.num_episodes = num_episodes
        self.replacement = replacement

    def validate(self, num_episodes: int) -> None:
        _check_count(type(self).__name__, self.num_episodes, num_episodes, self.replacement)

    def sample(self, advantages, returns, group_ids, generator):
        _check_inputs(type(self).__name__, advantages, returns, group_ids)
        self.validate(advantages.numel())
        weights = torch.ones(advantages.numel(), dtype=torch.float64)
        return torch.multinomial(weights, self.num_episodes, self.replacement, generator=generator)


class AbsoluteAdvantageWeighted(EpisodeSampler):
    """Draw episodes with probability proportional to ``|A_i|`` (the paper's sampler).

    Episodes at the group mean carry no gradient and are never drawn while others remain. Without
    replacement, once every episode with ``|A| > 0`` is drawn the rest are drawn uniformly; when every
    ``|A|`` is 0 the draw is uniform.

    Args:
        num_episodes: How many to draw (``>= 1``; at most the episodes per rollout without replacement).
        replacement: Draw with replacement (the paper does not say; default without).
    """

    def __init__(self, num_episodes: int = 32, replacement: bool = False) -> None:
        _check_positive_int(type(self).__name__, "num_episodes", num_episodes)
        self.num_episodes = num_episodes
        self.replacement = replacement

    def validate(self, num_episodes: int) -> None:
        _check_count(type(self).__name__, self.num_episodes, num_episodes, self.replacement)

    def sample(self, advantages, returns, group_ids, generator):
        name = type(self).__name__
        _check_inputs(name, advantages, returns, group_ids)
        self.validate(advantages.numel())
        weights = _abs_weights(name, advantages)
        nonzero = int((weights > 0).sum())
        if nonzero == 0:
            weights = torch.ones_like(weights)
        elif not self.replacement and self.num_episodes > nonzero:
            # Take every informative episode, then fill uniformly from the zero-advantage ones.
            informative = torch.nonzero(weights > 0).flatten()
            rest = torch.nonzero(weights == 0).flatten()
            pick = torch.randperm(rest.numel(), generator=generator)[: self.num_episodes - nonzero]
            return torch.cat([informative, rest[pick]])
        return torch.multinomial(weights, self.num_episodes, self.replacement, generator=generator)


class TopAbsAdvantage(EpisodeSampler):
    """Deterministically keep the ``num_episodes`` episodes with the largest ``|A_i|``.

    Ties are broken by episode index (the lower index first); the result is ordered from the largest
    ``|A|`` down. The generator is not used.

    Args:
        num_episodes: How many to keep (``>= 1``; at most the episodes per rollout).
    """

    def __init__(self, num_episodes: int = 32) -> None:
        _check_positive_int(type(self).__name__, "num_episodes", num_episodes)
        self.num_episodes = num_episodes

    def validate(self, num_episodes: int) -> None:
        _check_count(type(self).__name__, self.num_episodes, num_episodes, False, hint="lower num_episodes")

    def sample(self, advantages, returns, group_ids, generator):
        name = type(self).__name__
        _check_inputs(name, advantages, returns, group_ids)
        self.validate(advantages.numel())
        weights = _abs_weights(name, advantages).tolist()
        order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))
        return torch.tensor(order[: self.num_episodes], dtype=torch.long)


class GroupVarianceFilter(EpisodeSampler):
    """RAGEN-style filter: keep every episode of the groups whose returns vary most.

    Groups are ranked by the population variance of their episodes' returns, highest first; ties are
    broken by group id (lower first) and groups whose returns are all equal (zero variance, so zero
    advantage) rank last. The kept groups are the first ``keep_groups`` of the ranking, or, when
    ``keep_groups`` is not given, the first ``max(1, floor(keep_fraction x number of groups))``. The
    result lists the kept episodes in index order. The generator is not used.

    Args:
        keep_fraction: Fraction of the groups to keep, in ``(0, 1]`` (rounded down, at least one group).
        keep_groups: Exact number of groups to keep (``>= 1``); overrides ``keep_fraction`` when set.
    """

    def __init__(self, keep_fraction: float = 0.5, keep_groups: int | None = None) -> None:
        name = type(self).__name__
        if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)):
            raise ValueError(f"{name}: keep_fraction must be a number in (0, 1], got {keep_fraction!r}")
        if not (0.0 < keep_fraction <= 1.0):
            raise ValueError(f"{name}: keep_fraction must be in (0, 1], got {keep_fraction!r}")
        if keep_groups is not None:
            _check_positive_int(name, "keep_groups", keep_groups)
        self.keep_fraction = float(keep_fraction)
        self.keep_groups = keep_groups

    def validate(self, num_episodes: int) -> None:
        if self.keep_groups is not None:
            # Every group holds at least one episode, so there are at most num_episodes groups.
            _check_count(
                type(self).__name__,
                self.keep_groups,
                num_episodes,
                False,
                what="keep_groups",
                pool="episodes generated per iteration (so at most that many groups)",
                hint="lower keep_groups or use keep_fraction",
            )

    def num_kept(self, num_groups: int) -> int:
        """How many of ``num_groups`` groups are kept."""
        if self.keep_groups is not None:
            _check_count(
                type(self).__name__,
                self.keep_groups,
                num_groups,
                False,
                what="keep_groups",
                pool="groups in this rollout",
                hint="lower keep_groups or use keep_fraction",
            )
            return self.keep_groups
        return max(1, math.floor(self.keep_fraction * num_groups + 1e-9))

    def sample(self, advantages, returns, group_ids, generator):
        name = type(self).__name__
        _check_inputs(name, advantages, returns, group_ids)
        self.validate(advantages.numel())
        rets = returns.detach().to(device="cpu", dtype=torch.float64)
        gids = group_ids.detach().cpu()
        if not torch.isfinite(rets).all():
            raise ValueError(f"{name}: returns contain NaN or inf")
        ranking = []
        for g in torch.unique(gids).tolist():
            v = rets[gids == g]
            var = 0.0 if bool(v.max() == v.min()) else float(v.var(unbiased=False))
            # Informative groups first (highest variance first), then zero-variance ones; ties by id.
            ranking.append((var == 0.0, -var, g))
        ranking.sort()
        kept = [g for _, _, g in ranking[: self.num_kept(len(ranking))]]
        mask = torch.isin(gids, torch.tensor(kept, dtype=gids.dtype))
        return torch.nonzero(mask).flatten()
