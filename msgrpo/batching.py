"""From chosen steps to padded micro-batches under a token budget."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from msgrpo.types import Episode, MicroBatch, MiniBatch, StepSample


def step_samples(
    episodes: Sequence[Episode], advantages: Sequence[torch.Tensor], chosen: torch.Tensor
) -> list[StepSample]:
    """One single-turn sample per step of every chosen episode.

    Args:
        episodes: All episodes of the rollout.
        advantages: Per-step advantages, ``advantages[e]`` of shape ``[T_e]``.
        chosen: ``[K]`` indices of the episodes to train on (repeats allowed).

    Returns:
        Samples whose prompt is that step's observation only (no history) and whose completion is the
        generated token ids, never re-tokenised text.
    """
    samples = []
    for e in chosen.tolist():
        for step, adv in zip(episodes[e].steps, advantages[e].tolist()):
            if step.completion_ids.numel() == 0:
                continue
            samples.append(StepSample(step.prompt_ids, step.completion_ids, step.logprobs, float(adv)))
    return samples


def collate(samples: Sequence[StepSample], pad_id: int) -> MicroBatch:
    """Pad samples: prompts left-padded to ``P``, completions right-padded to ``C``.

    Returns:
        A :class:`MicroBatch` with ``input_ids [B, P + C]`` where every completion starts at column ``P``.
    """
    b = len(samples)
    p = max(s.prompt_ids.numel() for s in samples)
    c = max(s.completion_ids.numel() for s in samples)
    input_ids = torch.full((b, p + c), pad_id, dtype=torch.long)
    attention = torch.zeros((b, p + c), dtype=torch.long)
    comp_mask = torch.zeros((b, c))
    old = torch.zeros((b, c))
    ref = torch.zeros((b, c)) if all(s.ref_logprobs is not None for s in samples) else None
    for row, s in enumerate(samples):
        pl, cl = s.prompt_ids.numel(), s.completion_ids.numel()
        input_ids[row, p - pl : p] = s.prompt_ids
        input_ids[row, p : p + cl] = s.completion_ids
        attention[row, p - pl : p + cl] = 1
        comp_mask[row, :cl] = 1
        old[row, :cl] = s.old_logprobs
        if ref is not None:
            ref[row, :cl] = s.ref_logprobs
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    return MicroBatch(input_ids, attention, comp_mask, old, advantages, ref)


def pack_by_budget(samples: Sequence[StepSample], token_budget: int) -> list[list[StepSample]]:
    """Split samples into micro-batches whose padded size ``B x (P + C)`` stays within ``token_budget``.

    Samples are sorted by length first (length bucketing), so similar lengths share a micro-batch and
    little padding is computed. A single sample longer than the budget gets a micro-batch of its own.
    """
    ordered = sorted(samples, key=lambda s: (s.prompt_ids.numel(), s.completion_ids.numel()))
    groups: list[list[StepSample]] = []
    current: list[StepSample] = []
    p_max = c_max = 0
    for s in ordered:
        p2, c2 = max(p_max, s.prompt_ids.numel()), max(c_max, s.completion_ids.numel())
        if current and (len(current) + 1) * (p2 + c2) > token_budget:
            groups.append(current)
            current, p2, c2 = [], s.prompt_ids.numel(), s.completion_ids.numel()
        current.append(s)
        p_max, c_max = p2, c2
    if current:
        groups.append(current)
    return groups


def minibatches(
    samples: Sequence[StepSample],
    num_minibatches: int,
    token_budget: int,
    pad_id: int,
    generator: torch.Generator,
) -> list[MiniBatch]:
    """Shuffle samples into ``num_minibatches`` mini-batches (one optimizer step each) of micro-batches.

    Raises:
        ValueError: When there are fewer samples than mini-batches.
    """
    if len(samples) < num_minibatches:
        raise ValueError(f"{len(samples)} step samples cannot fill num_minibatches={num_minibatches}")
    order = torch.randperm(len(samples), generator=generator).tolist()
    out = []
    for chunk in torch.tensor(order).chunk(num_minibatches):
        part = [samples[i] for i in chunk.tolist()]
        micro = [collate(g, pad_id) for g in pack_by_budget(part, token_budget)]
        out.append(
            MiniBatch(
                micro_batches=micro,
                num_tokens=sum(int(s.completion_ids.numel()) for s in part),
                num_sequences=len(part),
            )
        )
    return out
