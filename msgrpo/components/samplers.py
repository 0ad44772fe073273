"""Episode samplers: which episodes of a rollout are trained on.

MS-GRPO generates more episodes than it trains on and draws the trained ones with probability
proportional to ``|A_i|`` (:class:`AbsoluteAdvantageWeighted`). The others are ablations:
:class:`All`, :class:`Uniform`, :class:`TopAbsAdvantage` (deterministic top-k by ``|A|``) and
:class:`GroupVarianceFilter` (RAGEN-style: keep the groups whose returns vary most).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch

from msgrpo.errors import ConfigError, require


class EpisodeSampler(ABC):
    """Chooses episode indices to train on."""

    @abstractmethod
    def sample(
        self,
        abs_advantages: torch.Tensor,
        returns: torch.Tensor,
        group_ids: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Pick episodes.

        Args:
            abs_advantages: ``[E]`` what each episode's steps will train on: the mean ``|A_t|`` over its
                steps, from whichever credit assigner is in use (``|A_i|`` under ``EpisodeReturn``; an
                episode whose step advantages are all 0 has 0). Non-negative.
            returns: ``[E]`` episode returns.
            group_ids: ``[E]`` group of each episode.
            generator: The seeded RNG to draw with.

        Returns:
            ``[K]`` long indices into the ``E`` episodes (repeats allowed with replacement). Without
            replacement, ``K`` is at most ``E`` (fewer episodes than asked for, e.g. when some episodes
            errored, give a smaller sample, not an error).
        """

    def importance_weights(self, abs_advantages: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor | None:
        """A factor for the advantages of each drawn episode (``[K]``), or None (all 1: the default).

        A sampler that draws by ``|A|`` can return ``1 / inclusion probability`` (normalised to mean 1) so
        that the update on the drawn episodes is an unbiased estimate of the update on all of them.
        """
        return None

    def validate(self, num_episodes: int) -> None:
        """Raise :class:`~msgrpo.errors.ConfigError` when this sampler cannot work on ``num_episodes``
        episodes per rollout (checked once, when the data module is built)."""
        return None  # the default sampler works on any number of episodes


def _check_positive_int(name: str, what: str, k: object) -> None:
    require(isinstance(k, int) and not isinstance(k, bool) and k >= 1, what, "an integer >= 1", k, owner=name)


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
        raise ConfigError(f"{what}={k} exceeds the {available} {pool}; {hint}", setting=what, owner=name)


def _check_inputs(name: str, advantages: torch.Tensor, returns: torch.Tensor, group_ids: torch.Tensor) -> None:
    if advantages.dim() != 1:
        raise ValueError(f"{name}: abs_advantages must have shape [E], got {tuple(advantages.shape)}")
    e = advantages.numel()
    if returns.shape != (e,) or group_ids.shape != (e,):
        raise ValueError(
            f"{name}: abs_advantages {tuple(advantages.shape)}, returns {tuple(returns.shape)} and "
            f"group_ids {tuple(group_ids.shape)} must all have shape [E]"
        )


def _abs_weights(name: str, advantages: torch.Tensor) -> torch.Tensor:
    weights = advantages.detach().abs().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(weights).all():
        raise ValueError(f"{name}: advantages contain NaN or inf")
    return weights


class All(EpisodeSampler):
    """Train on every episode."""

    def sample(self, abs_advantages, returns, group_ids, generator):
        return torch.arange(abs_advantages.numel())


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

    def sample(self, abs_advantages, returns, group_ids, generator):
        _check_inputs(type(self).__name__, abs_advantages, returns, group_ids)
        e = abs_advantages.numel()
        k = self.num_episodes if self.replacement else min(self.num_episodes, e)
        return torch.multinomial(torch.ones(e, dtype=torch.float64), k, self.replacement, generator=generator)


def inclusion_probabilities(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Inclusion probabilities proportional to ``weights`` for a sample of ``k`` without replacement.

    ``pi_i = min(1, c * w_i)`` with ``c`` chosen so that ``sum(pi) = k``: an episode whose share would
    exceed 1 is always included and the rest of the budget is spread over the others in proportion to
    their weights. Needs at least ``k`` positive weights.

    Args:
        weights: ``[E]`` non-negative weights.
        k: Sample size.

    Returns:
        ``[E]`` float64 probabilities in ``[0, 1]`` summing to ``k``.
    """
    w = weights.to(torch.float64)
    if int((w > 0).sum()) < k:
        raise ValueError(f"inclusion_probabilities: {int((w > 0).sum())} positive weights for a sample of {k}")
    pi = torch.zeros_like(w)
    certain = torch.zeros_like(w, dtype=torch.bool)
    while True:
        rest = k - int(certain.sum())
        free = ~certain
        pi[free] = rest * w[free] / w[free].sum()
        over = free & (pi >= 1.0)
        if not bool(over.any()):
            break
        certain |= over
        pi[certain] = 1.0
    return pi


def systematic_sample(pi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw a sample whose inclusion probabilities are exactly ``pi`` (systematic sampling, random order).

    The items are put in a random order and laid end to end on ``[0, sum(pi))``, each taking a segment
    as long as its probability; the points ``u, u + 1, ...`` (``u`` uniform in ``[0, 1)``) pick the
    items whose segments they fall in. A segment of length ``pi_i <= 1`` holds at most one point, and
    one with probability ``pi_i``; the sample has exactly ``sum(pi)`` items, none repeated.

    Args:
        pi: ``[E]`` probabilities in ``[0, 1]`` summing to an integer ``k``.
        generator: The RNG.

    Returns:
        ``[k]`` long indices, distinct.
    """
    k = int(round(float(pi.sum())))
    order = torch.randperm(pi.numel(), generator=generator)
    edges = pi[order].cumsum(0)  # [E] right edge of each segment
    edges[-1] = float(k)  # exact end: float error cannot drop the last point
    points = torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(k, dtype=torch.float64)
    return order[torch.searchsorted(edges, points, right=True)]


class AbsoluteAdvantageWeighted(EpisodeSampler):
    """Draw episodes with probability proportional to ``|A|`` (the paper's sampler).

    An episode's weight is what its steps train on: the mean ``|A_t|`` over its steps (the episode's
    ``|A_i|`` under :class:`~msgrpo.components.credit.EpisodeReturn`). ``scheme`` says exactly what is drawn:

    * ``"proportional"`` (default): ``num_episodes`` distinct episodes, each included with probability
      ``min(1, c |A_i|)`` (``c`` makes them sum to ``num_episodes``; see :func:`inclusion_probabilities`),
      drawn by systematic sampling in a random order. This is the sample without replacement whose
      inclusion probabilities are proportional to ``|A|``, so it is the closest reading of "episodes are
      sampled with probability proportional to ``|A|``" that never trains on an episode twice.
    * ``"successive"``: ``num_episodes`` successive weighted draws without replacement
      (``torch.multinomial``). Inclusion is not proportional: an episode with 8x the ``|A|`` of each of
      24 others, 3 drawn, is included about 5.9x as often as each of them, not 8x.
    * ``"replacement"``: ``num_episodes`` independent draws with probability proportional to ``|A|``; an
      episode can be drawn (and trained on) several times.

    Episodes with ``|A| = 0`` carry no policy gradient. When fewer than ``num_episodes`` episodes have
    ``|A| > 0``, the proportional and successive schemes take all of those and, unless ``fill``, nothing
    else: zero-advantage filler would only dilute the token mean of the loss. When every ``|A|`` is 0 the
    draw is uniform (``num_episodes`` of them, without replacement except under ``"replacement"``).

    Drawing by ``|A|`` is not neutral: the drawn episodes over-represent the large-``|A|`` ones, so their
    summed advantage is no longer 0 within a group. In a group where 7 of 8 episodes succeed, the one
    failure (``A = -2.47``) is always drawn and the successes (``A = +0.35``) only some of the time, so
    the moves all episodes share (the correct early moves) are pushed down; on a nearly solved task
    this can undo the policy. ``reweight`` removes the bias: each drawn episode's advantages are
    multiplied by ``1 / pi_i`` (its inclusion probability; ``1 / p_i`` per draw with replacement),
    normalised to mean 1 over the draw (the Horvitz-Thompson estimator of training on every episode).
    Uncapped, ``A_i / pi_i`` is the same magnitude for every drawn episode: the draw decides *which*
    episodes are trained on, the weights keep their update balanced.

    Args:
        num_episodes: How many to draw (``>= 1``; at most the episodes per rollout without replacement).
        scheme: ``"proportional"``, ``"successive"`` or ``"replacement"`` (see above).
        fill: Without replacement, top up with uniformly drawn zero-advantage episodes when fewer than
            ``num_episodes`` have ``|A| > 0``.
        reweight: Multiply each drawn episode's advantages by its importance weight (see above); not
            available with ``"successive"``, whose inclusion probabilities have no closed form.
    """

    SCHEMES = ("proportional", "successive", "replacement")

    def __init__(
        self,
        num_episodes: int = 32,
        scheme: Literal["proportional", "successive", "replacement"] = "proportional",
        fill: bool = False,
        reweight: bool = False,
    ) -> None:
        name = type(self).__name__
        _check_positive_int(name, "num_episodes", num_episodes)
        require(scheme in self.SCHEMES, "scheme", f"one of {list(self.SCHEMES)}", scheme, owner=name)
        if reweight and scheme == "successive":
            raise ConfigError(
                "reweight needs scheme 'proportional' or 'replacement' (successive draws have no closed-form "
                "inclusion probabilities)",
                setting="reweight",
                owner=name,
            )
        self.num_episodes = num_episodes
        self.scheme = scheme
        self.fill = fill
        self.reweight = reweight

    @property
    def replacement(self) -> bool:
        """Whether an episode can be drawn more than once."""
        return self.scheme == "replacement"

    def validate(self, num_episodes: int) -> None:
        _check_count(
            type(self).__name__,
            self.num_episodes,
            num_episodes,
            self.replacement,
            hint="lower num_episodes or set scheme=replacement",
        )

    def sample(self, abs_advantages, returns, group_ids, generator):
        name = type(self).__name__
        _check_inputs(name, abs_advantages, returns, group_ids)
        weights = _abs_weights(name, abs_advantages)
        e, k = weights.numel(), self.num_episodes
        informative = torch.nonzero(weights > 0).flatten()
        m = informative.numel()
        if m == 0:  # nothing to learn from: uniform
            return torch.multinomial(torch.ones(e, dtype=torch.float64), k if self.replacement else min(k, e),
                                     self.replacement, generator=generator)  # fmt: skip
        if self.replacement:
            return torch.multinomial(weights, k, True, generator=generator)
        if m <= k:  # every informative episode, then optional filler
            chosen = informative[torch.randperm(m, generator=generator)]
            if self.fill and m < k:
                rest = torch.nonzero(weights == 0).flatten()
                chosen = torch.cat([chosen, rest[torch.randperm(rest.numel(), generator=generator)[: k - m]]])
            return chosen
        if self.scheme == "successive":
            return torch.multinomial(weights, k, False, generator=generator)
        return systematic_sample(inclusion_probabilities(weights, k), generator)

    def importance_weights(self, abs_advantages, chosen):
        if not self.reweight:
            return None
        weights = _abs_weights(type(self).__name__, abs_advantages)
        k, m = self.num_episodes, int((weights > 0).sum())
        if m == 0 or (not self.replacement and m <= k):  # uniform, or every informative episode: pi = 1
            return None
        if self.replacement:
            p = weights / weights.sum()  # per draw
        else:
            p = inclusion_probabilities(weights, k)
        inverse = 1.0 / p[chosen]  # drawn episodes have p > 0
        return (inverse / inverse.mean()).to(torch.float32)


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

    def sample(self, abs_advantages, returns, group_ids, generator):
        name = type(self).__name__
        _check_inputs(name, abs_advantages, returns, group_ids)
        weights = _abs_weights(name, abs_advantages).tolist()
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
        number = isinstance(keep_fraction, (int, float)) and not isinstance(keep_fraction, bool)
        require(number, "keep_fraction", "a number in (0, 1]", keep_fraction, owner=name)
        require(0.0 < keep_fraction <= 1.0, "keep_fraction", "in (0, 1]", keep_fraction, owner=name)
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
        """How many of ``num_groups`` groups are kept (never more than there are)."""
        if self.keep_groups is not None:
            return min(self.keep_groups, num_groups)
        return max(1, math.floor(self.keep_fraction * num_groups + 1e-9))

    def sample(self, abs_advantages, returns, group_ids, generator):
        name = type(self).__name__
        _check_inputs(name, abs_advantages, returns, group_ids)
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
