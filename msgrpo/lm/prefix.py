"""Shared-prefix KV machinery, written once for the rollout and the update.

Prompts of one batch share a long prefix (the system message and the fixed start of a game's user
message). Both :func:`msgrpo.lm.decoding.generate` and :func:`msgrpo.lm.decoding.completion_logits` run that
prefix once, as one row, and broadcast its KV cache to every row, which then runs only the rest of its
sequence. In the update the broadcast keeps the gradient: the prefix's gradient is gathered from every row.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Cache

MIN_SHARED_PREFIX = 16
"""Shortest common prompt prefix worth a prefill pass of its own."""


def common_prefix_len(prompts: list[torch.Tensor], min_len: int = MIN_SHARED_PREFIX) -> int:
    """Length of the token prefix every prompt shares.

    The longest common prefix, kept at least one token short of the shortest prompt (each row needs a
    token of its own to predict from); 0 (no sharing) for a single prompt or when the common prefix is
    shorter than ``min_len``.

    Args:
        prompts: ``B`` prompt-id tensors, ``[P_b]``.
        min_len: Shortest prefix worth sharing.
    """
    if len(prompts) < 2:
        return 0
    limit = min(p.numel() for p in prompts) - 1
    if limit < min_len:
        return 0
    first = prompts[0][:limit]
    same = torch.ones(limit, dtype=torch.bool, device=first.device)
    for p in prompts[1:]:
        same &= p[:limit] == first
    n = int(same.logical_not().nonzero()[0]) if not bool(same.all()) else limit
    return n if n >= min_len else 0


def prefill_shared(
    model: nn.Module, prefix: torch.Tensor | dict[str, torch.Tensor], cache: Cache, cache_arg: str, rows: int
) -> None:
    """Run ``prefix`` (``[1, S]`` ids at positions ``0 .. S-1``, or ``{"input_ids": ...}`` /
    ``{"inputs_embeds": [1, S, H]}``) once into ``cache`` and broadcast it to ``rows`` rows.

    Differentiable when gradients are enabled: the broadcast rows share the prefix's keys and values.
    """
    inputs = prefix if isinstance(prefix, dict) else {"input_ids": prefix}
    length, device = next(iter(inputs.values())).shape[1], next(iter(inputs.values())).device
    model(
        **inputs,
        attention_mask=torch.ones((1, length), dtype=torch.long, device=device),
        position_ids=torch.arange(length, device=device)[None],
        use_cache=True,
        logits_to_keep=1,
        **{cache_arg: cache},
    )
    cache.reorder_cache(torch.zeros(rows, dtype=torch.long, device=device))
