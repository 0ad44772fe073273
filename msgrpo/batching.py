"""From chosen steps to padded micro-batches under a token budget."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from msgrpo.types import Episode, MicroBatch, MiniBatch, StepSample


def step_samples(
    episodes: Sequence[Episode],
    advantages: Sequence[torch.Tensor],
    chosen: torch.Tensor,
    scales: torch.Tensor | None = None,
) -> list[StepSample]:
    """One single-turn sample per step of every chosen episode.

    Args:
        episodes: All episodes of the rollout.
        advantages: Per-step advantages, ``advantages[e]`` of shape ``[T_e]``.
        chosen: ``[K]`` indices of the episodes to train on (repeats allowed).
        scales: ``[K]`` factors for the advantages of each chosen episode (a sampler's importance
            weights), or None.

    Returns:
        Samples whose prompt is that step's observation only (no history) and whose completion is the
        generated token ids, never re-tokenised text.
    """
    samples = []
    factors = [1.0] * chosen.numel() if scales is None else scales.tolist()
    for e, factor in zip(chosen.tolist(), factors, strict=True):
        for step, adv in zip(episodes[e].steps, advantages[e].tolist()):
            if step.completion_ids.numel() == 0:
                continue
            samples.append(
                StepSample(
                    step.prompt_ids, step.completion_ids, step.logprobs, float(adv) * factor,
                    prefix_group=episodes[e].game,
                )
            )  # fmt: skip
    return samples


def sequence_key(sample: StepSample) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Identity of a sample's token sequence: samples with equal keys have equal log-probs."""
    return tuple(sample.prompt_ids.tolist()), tuple(sample.completion_ids.tolist())


def collate(samples: Sequence[StepSample], pad_id: int, dedupe: bool = True) -> MicroBatch:
    """Pad samples: prompts left-padded to ``P``, completions right-padded to ``C``.

    Args:
        samples: The step samples.
        pad_id: Padding token id.
        dedupe: Give identical token sequences one row of ``input_ids`` (see :attr:`MicroBatch.rows`),
            so the forward and backward passes compute each distinct sequence once. Exact: identical
            sequences have identical log-probs, and every per-sample quantity stays per sample.

    Returns:
        A :class:`MicroBatch` with ``input_ids [U, P + C]`` where every completion starts at column ``P``.
    """
    b = len(samples)
    p = max(s.prompt_ids.numel() for s in samples)
    c = max(s.completion_ids.numel() for s in samples)
    index: dict = {}
    rows = [index.setdefault(sequence_key(s) if dedupe else i, len(index)) for i, s in enumerate(samples)]
    distinct = {row: s for row, s in zip(rows, samples)}
    input_ids = torch.full((len(distinct), p + c), pad_id, dtype=torch.long)
    attention = torch.zeros((len(distinct), p + c), dtype=torch.long)
    for row, s in distinct.items():
        pl, cl = s.prompt_ids.numel(), s.completion_ids.numel()
        input_ids[row, p - pl : p] = s.prompt_ids
        input_ids[row, p : p + cl] = s.completion_ids
        attention[row, p - pl : p + cl] = 1
    comp_mask = torch.zeros((b, c))
    old = torch.zeros((b, c))
    ref = torch.zeros((b, c)) if all(s.ref_logprobs is not None for s in samples) else None
    for i, s in enumerate(samples):
        cl = s.completion_ids.numel()
        comp_mask[i, :cl] = 1
        old[i, :cl] = s.old_logprobs
        if ref is not None:
            ref[i, :cl] = s.ref_logprobs
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    row_index = None if len(distinct) == b else torch.tensor(rows, dtype=torch.long)
    return MicroBatch(input_ids, attention, comp_mask, old, advantages, ref, row_index)


def pack_by_budget(samples: Sequence[StepSample], token_budget: int, dedupe: bool = True) -> list[list[StepSample]]:
    """Split samples into micro-batches whose padded size ``B x (P + C)`` stays within ``token_budget``.

    A micro-batch holds samples of one :attr:`~msgrpo.types.StepSample.prefix_group` only (one game of
    a mixture: they share its rules' prefix, which then runs once). Within a group samples are sorted
    by length (length bucketing), so similar lengths share a micro-batch and little padding is
    computed; identical sequences end up next to each other and count once against the budget
    (:func:`collate` gives them one row). A single sample longer than the budget gets a micro-batch of
    its own.
    """
    keyed = sorted(
        (s.prefix_group, s.prompt_ids.numel(), s.completion_ids.numel(), sequence_key(s) if dedupe else (), i)
        for i, s in enumerate(samples)
    )
    groups: list[list[StepSample]] = []
    current: list[StepSample] = []
    seen: set = set()
    p_max = c_max = 0
    group = None  # the current micro-batch's prefix group
    for prefix_group, pl, cl, key, i in keyed:
        key = key if dedupe else i
        if key in seen:  # a duplicate costs no extra row
            current.append(samples[i])
            continue
        p2, c2 = max(p_max, pl), max(c_max, cl)
        if current and (prefix_group != group or (len(seen) + 1) * (p2 + c2) > token_budget):
            groups.append(current)
            current, seen, p2, c2 = [], set(), pl, cl
        current.append(samples[i])
        seen.add(key)
        p_max, c_max, group = p2, c2, prefix_group
    if current:
        groups.append(current)
    return groups


def minibatches(
    samples: Sequence[StepSample],
    num_minibatches: int,
    token_budget: int,
    pad_id: int,
    generator: torch.Generator,
    dedupe: bool = True,
) -> list[MiniBatch]:
    """Shuffle samples into exactly ``num_minibatches`` mini-batches (one optimizer step each) of
    micro-batches, as even as possible: their sizes differ by at most one (10 samples in 4 give
    3, 3, 2, 2).

    ``dedupe``: compute identical sequences once per micro-batch (see :func:`collate`).

    Raises:
        ValueError: When there are fewer samples than mini-batches.
    """
    if not 1 <= num_minibatches <= len(samples):
        raise ValueError(f"{len(samples)} step samples cannot fill num_minibatches={num_minibatches}")
    order = torch.randperm(len(samples), generator=generator).tolist()
    out = []
    for chunk in torch.tensor_split(torch.tensor(order), num_minibatches):
        part = [samples[i] for i in chunk.tolist()]
        micro = [collate(g, pad_id, dedupe) for g in pack_by_budget(part, token_budget, dedupe)]
        out.append(
            MiniBatch(
                micro_batches=micro,
                num_tokens=sum(int(s.completion_ids.numel()) for s in part),
                num_sequences=len(part),
            )
        )
    return out
