"""Credit assignment: from episode rewards to per-step advantages.

Every assigner is pure: it takes per-step rewards of ``E`` episodes and their group ids and returns one
advantage per step. MS-GRPO's :class:`EpisodeReturn` gives every step its episode's group-normalised
return. The other assigners are ablations:

- :class:`StepReward`: each step's own reward, normalised over the step rows of its group.
- :class:`DiscountedReturn`: each step's discounted return-to-go, normalised over the step rows of its
  group.
- :class:`TerminalOnly`: the episode advantage on the last step only.
- :class:`AnchorState`: GiGPO-style episode advantage plus a step advantage within groups of identical
  states.
- :class:`LeaveOneOut`: the RLOO baseline (each episode against the mean of the others).

A truncated episode is just a shorter reward list; an episode with no steps gets an empty advantage tensor
(and a return of 0 where a return is needed).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch

from msgrpo.components.returns import (
    EPS,
    _lengths,
    _rows_to_episodes,
    discounted_returns,
    episode_returns,
    episode_weights,
    group_normalize,
    length_neutral,
)
from msgrpo.errors import ConfigError, require

__all__ = [
    "EPS", "AnchorState", "CreditAssigner", "DiscountedReturn", "EpisodeReturn", "LeaveOneOut", "StepReward",
    "TerminalOnly", "discounted_returns", "episode_returns", "episode_weights", "group_normalize",
]  # fmt: skip


def _check_gamma(name: str, gamma: float) -> None:
    require(isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0, "gamma", "in [0, 1]", gamma, owner=name)


def _finite_non_negative(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x >= 0


def _check_stats_over(name: str, stats_over: str) -> None:
    require(stats_over in ("episodes", "steps"), "stats_over", "'episodes' or 'steps'", stats_over, owner=name)


def _episode_level_advantages(
    rewards: list[torch.Tensor],
    group_ids: torch.Tensor,
    scale_by_std: bool,
    eps: float,
    stats_over: str,
) -> torch.Tensor:
    """Group-normalised episode return, with statistics over episodes or over step rows. ``[E]``."""
    returns = episode_returns(rewards)  # [E]
    if stats_over == "episodes" or not rewards:
        return group_normalize(returns, group_ids, scale_by_std, eps)
    lengths = torch.tensor([max(r.numel(), 1) for r in rewards])  # an empty episode counts as one row
    rows = returns.repeat_interleave(lengths)  # [sum T_e]
    row_groups = group_ids.repeat_interleave(lengths)
    normed = group_normalize(rows, row_groups, scale_by_std, eps)
    starts = torch.cumsum(lengths, 0) - lengths
    return normed[starts]


class CreditAssigner(ABC):
    """Turns per-step rewards into per-step advantages.

    Args:
        scale_by_std: Divide group-centred values by the group std (GRPO) or not (Dr. GRPO).
        eps: Added to the std.
    """

    def __init__(self, scale_by_std: bool = True, eps: float = EPS) -> None:
        name = type(self).__name__
        require(isinstance(scale_by_std, bool), "scale_by_std", "true or false", scale_by_std, owner=name)
        require(_finite_non_negative(eps), "eps", "a finite number >= 0", eps, owner=name)
        self.scale_by_std = scale_by_std
        self.eps = float(eps)

    @abstractmethod
    def assign(
        self,
        rewards: list[torch.Tensor],
        group_ids: torch.Tensor,
        observations: list[list[str]] | None = None,
    ) -> list[torch.Tensor]:
        """Per-step advantages.

        Args:
            rewards: ``E`` tensors; ``rewards[e]`` has shape ``[T_e]`` (the episode's step rewards).
            group_ids: ``[E]`` long: the group of each episode.
            observations: ``E`` lists of ``T_e`` observation texts (used by state-grouping assigners).

        Returns:
            ``E`` tensors of shape ``[T_e]``: the advantage every completion token of that step carries.
        """

    def episode_advantages(self, rewards: list[torch.Tensor], group_ids: torch.Tensor) -> torch.Tensor:
        """The episode-level part of the credit: the group-normalised return. ``[E]``.

        Samplers do not use it: they weigh episodes by what their steps carry (:func:`episode_weights`).
        """
        self._check_inputs(rewards, group_ids)
        return group_normalize(episode_returns(rewards), group_ids, self.scale_by_std, self.eps)

    def _check_inputs(self, rewards: list[torch.Tensor], group_ids: torch.Tensor) -> None:
        if group_ids.dim() != 1 or group_ids.numel() != len(rewards):
            raise ValueError(
                f"{type(self).__name__}: group_ids must have shape [E] = [{len(rewards)}], got {tuple(group_ids.shape)}"
            )

    def _row_groups(self, rewards: list[torch.Tensor], group_ids: torch.Tensor) -> torch.Tensor:
        """Group id of every step row (episodes with no steps contribute no row). ``[sum T_e]``."""
        return group_ids.repeat_interleave(torch.tensor(_lengths(rewards), dtype=torch.long))


class EpisodeAssigner(CreditAssigner):
    """An assigner whose every step carries its episode's advantage (:meth:`episode_advantages`)."""

    @abstractmethod
    def episode_advantages(self, rewards: list[torch.Tensor], group_ids: torch.Tensor) -> torch.Tensor:
        """One advantage per episode. ``[E]``."""

    def assign(self, rewards, group_ids, observations=None):
        adv = self.episode_advantages(rewards, group_ids)  # [E]
        return [torch.full((r.numel(),), float(a)) for r, a in zip(rewards, adv, strict=True)]


class StepRowAssigner(CreditAssigner):
    """An assigner that normalises one value per step over all step rows of the group (:meth:`step_values`)."""

    @abstractmethod
    def step_values(self, reward: torch.Tensor) -> torch.Tensor:
        """The value of every step of one episode (``[T]`` rewards -> ``[T]`` float64)."""

    def assign(self, rewards, group_ids, observations=None):
        self._check_inputs(rewards, group_ids)
        lengths = _lengths(rewards)
        if sum(lengths) == 0:
            return [torch.zeros(0) for _ in rewards]
        rows = torch.cat([self.step_values(r) for r in rewards])
        normed = group_normalize(rows, self._row_groups(rewards, group_ids), self.scale_by_std, self.eps)
        return _rows_to_episodes(normed, lengths)


class EpisodeReturn(EpisodeAssigner):
    """MS-GRPO: every step carries its episode's group-normalised return.

    ``A_i = (R_i - mean(R)) / (std(R) + eps)`` over the episodes of a group.

    Args:
        scale_by_std: Divide by the group std (paper) or not (Dr. GRPO style).
        stats_over: ``"episodes"`` (paper: each episode counts once) or ``"steps"`` (verl-agent's
            default: mean and std over step rows, each row carrying its episode's return, so long
            episodes weigh more).
        eps: Added to the std.
        length_neutral: Every episode weighs the same in the update, whatever its length: step ``t`` of
            episode ``i`` carries ``A_i * mean_T / T_i`` (``mean_T``: the group's mean episode length;
            :func:`~msgrpo.components.returns.length_neutral`) instead of ``A_i``. The episode advantages
            are the paper's; only their spread over the steps changes, so a group's step advantages sum
            to 0 and the update has no net push on whatever was sampled (``loss/advantage_mean`` near 0).
            Off by default (the paper broadcasts ``A_i``). Samplers weigh an episode by its mean ``|A_t|``,
            here ``|A_i| * mean_T / T_i``: a short episode is drawn more often than a long one of the same
            ``|A_i|`` (``reweight`` keeps the update unbiased).
    """

    def __init__(
        self,
        scale_by_std: bool = True,
        stats_over: Literal["episodes", "steps"] = "episodes",
        eps: float = EPS,
        length_neutral: bool = False,
    ) -> None:
        super().__init__(scale_by_std, eps)
        name = type(self).__name__
        _check_stats_over(name, stats_over)
        require(isinstance(length_neutral, bool), "length_neutral", "true or false", length_neutral, owner=name)
        if length_neutral and (stats_over != "episodes" or type(self).assign is not EpisodeReturn.assign):
            raise ConfigError(
                "length_neutral needs stats_over: episodes and EpisodeReturn's own spread of the advantage over the "
                "steps (the group's step advantages then sum to 0)",
                setting="length_neutral",
                value=length_neutral,
                owner=name,
            )
        self.stats_over = stats_over
        self.length_neutral = length_neutral

    def episode_advantages(self, rewards: list[torch.Tensor], group_ids: torch.Tensor) -> torch.Tensor:
        self._check_inputs(rewards, group_ids)
        return _episode_level_advantages(rewards, group_ids, self.scale_by_std, self.eps, self.stats_over)

    def assign(self, rewards, group_ids, observations=None):
        if self.length_neutral:
            adv = self.episode_advantages(rewards, group_ids)  # [E]
            return length_neutral(adv, torch.tensor(_lengths(rewards)), group_ids)
        return super().assign(rewards, group_ids, observations)


class StepReward(StepRowAssigner):
    """Each step carries its own reward, normalised over all step rows of its group.

    ``A_{i,t} = (r_{i,t} - mean(r)) / (std(r) + eps)`` where mean and std run over every step of every
    episode of the group. No credit flows between steps: a step is judged by its immediate reward only.

    Args:
        scale_by_std: Divide by the std of the group's step rewards or not (Dr. GRPO style).
        eps: Added to the std.
    """

    def __init__(self, scale_by_std: bool = True, eps: float = EPS) -> None:
        super().__init__(scale_by_std, eps)

    def step_values(self, reward: torch.Tensor) -> torch.Tensor:
        return reward.to(torch.float64).flatten()


class DiscountedReturn(StepRowAssigner):
    """Each step carries its discounted return-to-go, normalised over all step rows of its group.

    ``G_{i,t} = sum_{k>=t} gamma^(k-t) r_{i,k}``; ``A_{i,t} = (G_{i,t} - mean(G)) / (std(G) + eps)``
    where mean and std run over every step of every episode of the group.

    Args:
        gamma: Discount per step, in ``[0, 1]`` (1: undiscounted reward-to-go; 0: the step reward).
        scale_by_std: Divide by the std of the group's returns-to-go or not (Dr. GRPO style).
        eps: Added to the std.
    """

    def __init__(self, gamma: float = 0.95, scale_by_std: bool = True, eps: float = EPS) -> None:
        super().__init__(scale_by_std, eps)
        _check_gamma(type(self).__name__, gamma)
        self.gamma = float(gamma)

    def step_values(self, reward: torch.Tensor) -> torch.Tensor:
        return discounted_returns(reward, self.gamma)


class TerminalOnly(EpisodeReturn):
    """The episode advantage on the episode's last step only; every earlier step carries 0.

    The last step's advantage is the group-normalised return, as in :class:`EpisodeReturn`; the earlier
    steps' completions get no gradient from the policy term.

    Args:
        scale_by_std: Divide by the group std or not (Dr. GRPO style).
        stats_over: ``"episodes"`` (each episode counts once) or ``"steps"`` (statistics over step rows,
            each row carrying its episode's return), as in :class:`EpisodeReturn`.
        eps: Added to the std.
    """

    def assign(self, rewards, group_ids, observations=None):
        adv = self.episode_advantages(rewards, group_ids)  # [E]
        out = []
        for r, a in zip(rewards, adv, strict=True):
            steps = torch.zeros(r.numel())
            if r.numel():
                steps[-1] = float(a)
            out.append(steps)
        return out


class AnchorState(EpisodeReturn):
    """GiGPO-style credit: episode advantage plus a step advantage among identical states.

    ``A_{i,t} = A_i + weight * S_{i,t}``. ``A_i`` is the group-normalised episode return (as in
    :class:`EpisodeReturn`). ``S_{i,t}`` compares steps that saw the same state: within a group, every
    step whose observation text is identical forms an *anchor group* (a state revisited inside one
    episode joins the same anchor group); ``S`` is the discounted return-to-go of the step normalised
    within its anchor group. An anchor group of one step contributes 0. Needs the observation texts.

    Args:
        weight: Weight of the step-level advantage (``>= 0``; 0 gives :class:`EpisodeReturn`).
        gamma: Discount of the step-level return-to-go, in ``[0, 1]``.
        scale_by_std: Divide by the std (in both the episode and the anchor-group normalisation) or not.
        stats_over: Statistics of the episode advantage: ``"episodes"`` or ``"steps"``, as in
            :class:`EpisodeReturn`.
        eps: Added to the std.
    """

    def __init__(
        self,
        weight: float = 1.0,
        gamma: float = 0.95,
        scale_by_std: bool = True,
        stats_over: Literal["episodes", "steps"] = "episodes",
        eps: float = EPS,
    ) -> None:
        super().__init__(scale_by_std, stats_over, eps)
        name = type(self).__name__
        require(_finite_non_negative(weight), "weight", "a finite number >= 0", weight, owner=name)
        _check_gamma(name, gamma)
        self.weight = float(weight)
        self.gamma = float(gamma)

    def step_advantages(
        self, rewards: list[torch.Tensor], group_ids: torch.Tensor, observations: list[list[str]]
    ) -> list[torch.Tensor]:
        """``S_{i,t}``: discounted return-to-go normalised within anchor groups of identical states."""
        self._check_inputs(rewards, group_ids)
        self._check_observations(rewards, observations)
        lengths = _lengths(rewards)
        if sum(lengths) == 0:
            return [torch.zeros(0) for _ in rewards]
        anchors: dict[tuple[int, str], int] = {}
        anchor_ids: list[int] = []
        for g, obs in zip(group_ids.tolist(), observations, strict=True):
            for text in obs:
                anchor_ids.append(anchors.setdefault((int(g), text), len(anchors)))
        rows = torch.cat([discounted_returns(r, self.gamma) for r in rewards])
        normed = group_normalize(rows, torch.tensor(anchor_ids), self.scale_by_std, self.eps)
        return _rows_to_episodes(normed, lengths)

    def assign(self, rewards, group_ids, observations=None):
        episode = self.episode_advantages(rewards, group_ids)  # [E]
        steps = self.step_advantages(rewards, group_ids, observations)
        return [
            (float(a) + self.weight * s.to(torch.float64)).to(torch.float32)
            for a, s in zip(episode, steps, strict=True)
        ]

    def _check_observations(self, rewards: list[torch.Tensor], observations: list[list[str]] | None) -> None:
        name = type(self).__name__
        if observations is None:
            raise ValueError(
                f"{name} groups steps by their observation text and needs observations; "
                "call assign(rewards, group_ids, observations)"
            )
        if len(observations) != len(rewards):
            raise ValueError(f"{name}: {len(observations)} observation lists for {len(rewards)} episodes")
        for e, (obs, r) in enumerate(zip(observations, rewards, strict=True)):
            if len(obs) != r.numel():
                raise ValueError(f"{name}: episode {e} has {r.numel()} rewards but {len(obs)} observations")


class LeaveOneOut(EpisodeAssigner):
    """RLOO baseline: each episode's return against the mean return of the other episodes of its group.

    ``A_i = R_i - mean_{j != i} R_j`` (equal to ``n / (n - 1) * (R_i - mean(R))`` for a group of ``n``);
    a one-episode group gets 0. With ``scale_by_std`` the difference is divided by the group's population
    std of returns plus ``eps``. Every step carries its episode's advantage.

    Args:
        scale_by_std: Divide by the group std of returns (off by default: plain RLOO).
        eps: Added to the std.
    """

    def __init__(self, scale_by_std: bool = False, eps: float = EPS) -> None:
        super().__init__(scale_by_std, eps)

    def episode_advantages(self, rewards: list[torch.Tensor], group_ids: torch.Tensor) -> torch.Tensor:
        self._check_inputs(rewards, group_ids)
        returns = episode_returns(rewards).to(torch.float64)
        out = torch.zeros_like(returns)
        for g in torch.unique(group_ids):
            mask = group_ids == g
            v = returns[mask]
            n = v.numel()
            if n < 2 or bool(v.max() == v.min()):
                continue
            adv = v - (v.sum() - v) / (n - 1)
            if self.scale_by_std:
                adv = adv / (v.std(unbiased=False) + self.eps)
            out[mask] = adv
        return out.to(torch.float32)
