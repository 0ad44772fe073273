"""Returns, group normalisation and episode weights: the arithmetic the credit assigners share.

Pure functions on tensors, each checked against hand-computed numbers in ``tests/components/test_credit.py``.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def group_normalize(
    values: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool = True, eps: float = EPS
) -> torch.Tensor:
    """Subtract the group mean (and divide by the group std) of each value.

    The std is the population std (``unbiased=False``), so a one-element group and a group of equal
    values both give exactly 0, never NaN (equal values are detected exactly, so floating-point error in
    the mean cannot leave tiny non-zero advantages behind).

    Args:
        values: ``[N]`` float values.
        group_ids: ``[N]`` long group id of each value.
        scale_by_std: Divide by ``std + eps`` (GRPO) or not (Dr. GRPO).
        eps: Added to the std.

    Returns:
        ``[N]`` normalised values.
    """
    values = values.to(torch.float64)
    if group_ids.shape != values.shape:
        raise ValueError(f"group_normalize: values {tuple(values.shape)} and group_ids {tuple(group_ids.shape)} differ")
    out = torch.zeros_like(values)
    for g in torch.unique(group_ids):
        mask = group_ids == g
        v = values[mask]
        if bool(v.max() == v.min()):  # one element or all equal: exactly 0
            continue
        centred = v - v.mean()
        if scale_by_std:
            centred = centred / (v.std(unbiased=False) + eps)
        out[mask] = centred
    return out.to(torch.float32)


def episode_returns(rewards: list[torch.Tensor]) -> torch.Tensor:
    """Sum of each episode's rewards. ``E`` tensors of shape ``[T_e]`` -> ``[E]``."""
    if not rewards:
        return torch.zeros(0)
    return torch.stack(
        [r.to(torch.float64).sum() if r.numel() else torch.zeros((), dtype=torch.float64) for r in rewards]
    ).to(torch.float32)


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return-to-go of every step: ``G_t = r_t + gamma * G_{t+1}``, ``G_T = 0``. ``[T]`` -> ``[T]``."""
    r = rewards.to(torch.float64).flatten()
    out = torch.zeros_like(r)
    running = 0.0
    for t in range(r.numel() - 1, -1, -1):
        running = float(r[t]) + gamma * running
        out[t] = running
    return out


def _lengths(rewards: list[torch.Tensor]) -> list[int]:
    return [int(r.numel()) for r in rewards]


def _rows_to_episodes(rows: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """Split ``[sum T_e]`` step rows back into ``E`` float32 tensors of shape ``[T_e]``."""
    return [part.to(torch.float32).clone() for part in torch.split(rows, lengths)]


def episode_weights(advantages: list[torch.Tensor]) -> torch.Tensor:
    """What each episode's steps train on: the mean ``|A_t|`` over its steps (0 for no steps). ``[E]``.

    Samplers draw episodes by this, so that whatever the credit assigner, an episode whose steps all carry
    advantage 0 weighs nothing and one whose steps carry large advantages (of either sign) weighs much.
    Under :class:`EpisodeReturn` every step carries ``A_i``, so the weight is ``|A_i|``, the paper's.
    """
    return torch.tensor(
        [float(a.abs().to(torch.float64).mean()) if a.numel() else 0.0 for a in advantages], dtype=torch.float32
    )


def length_neutral(advantages: torch.Tensor, lengths: torch.Tensor, group_ids: torch.Tensor) -> list[torch.Tensor]:
    """Spread each episode's advantage over its steps so that every episode weighs the same in a token mean.

    Step ``t`` of episode ``i`` carries ``A_i * mean_T / T_i``, where ``mean_T`` is the mean length of the
    episodes of ``i``'s group: the steps of an episode carry ``A_i * mean_T`` in total, whatever its length,
    and within a group whose ``A_i`` sum to 0 so do all of its steps' advantages. Broadcasting ``A_i`` to
    every step instead gives a long episode ``T_i`` times its advantage: when the long episodes are the good
    ones (Snake: a survivor plays 8 rounds, a loser 3), the update's net push on whatever was sampled is
    positive, which sharpens every sampled move, right or wrong, and drains entropy without learning.

    Args:
        advantages: ``[E]`` episode advantages.
        lengths: ``[E]`` steps per episode (an episode with no steps gets an empty tensor).
        group_ids: ``[E]`` group of each episode.

    Returns:
        ``E`` float32 tensors of shape ``[T_e]``.
    """
    out = []
    mean_length = {int(g): float(lengths[group_ids == g].to(torch.float64).mean()) for g in torch.unique(group_ids)}
    for a, n, g in zip(advantages.tolist(), lengths.tolist(), group_ids.tolist(), strict=True):
        scale = mean_length[g] / n if n else 0.0
        out.append(torch.full((int(n),), a * scale, dtype=torch.float32))
    return out
