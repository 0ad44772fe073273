"""Decoding as free functions beside the model: the batched, KV-cached sampling loop of the rollout and the
completion-position forward pass of the update.

Both take the sampling distribution (:class:`~msgrpo.lm.distribution.SamplingDistribution`) from the caller
and share the prompt prefix through :mod:`msgrpo.lm.prefix`; :class:`~msgrpo.policy.LanguagePolicy` wires them
to its model and settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Cache, DynamicCache, StaticCache

from msgrpo.lm.distribution import SamplingDistribution, sample
from msgrpo.lm.prefix import prefill_shared
from msgrpo.types import MicroBatch

TRUNK_SECONDS = [0.0]
"""Seconds spent in frozen-trunk passes in this process (``perf/trunk_s`` logs each iteration's share)."""


@dataclass
class Generation:
    """Sampled completions for a batch of prompts.

    Attributes:
        completion_ids: ``B`` tensors of shape ``[C_b]`` (EOS included when emitted, no padding).
        logprobs: ``B`` tensors of shape ``[C_b]``: log-prob of each token under the sampling distribution.
        texts: ``B`` decoded completions (special tokens removed).
        forward_s: Seconds spent inside model forward passes.
    """

    completion_ids: list[torch.Tensor]
    logprobs: list[torch.Tensor]
    texts: list[str]
    forward_s: float = 0.0


def left_pad(prompts: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``B`` prompts -> ``input_ids [B, P]``, ``attention_mask [B, P]`` (left padded)."""
    width = max(p.numel() for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - p.numel() :] = p
        mask[row, width - p.numel() :] = 1
    return ids, mask


def new_cache(config, max_len: int) -> Cache:
    """A KV cache preallocated for ``max_len`` positions (a growing cache copies itself at every decoding
    step); a growing one for models without static-cache support."""
    try:
        return StaticCache(config=config, max_cache_len=max_len)
    except Exception:  # noqa: BLE001 - unusual configs: fall back to the always-supported cache
        return DynamicCache()


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: list[torch.Tensor],
    dist: SamplingDistribution,
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    cache_arg: str,
    shared: int = 0,
    dedupe: bool = True,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    fixed_steps: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Sample one completion per prompt in a single batched, KV-cached decoding loop.

    The first ``shared`` tokens (common to every prompt) are prefilled once and their KV cache broadcast;
    with ``dedupe``, identical prompts are prefilled once. Every row then samples its own completion.

    Args:
        model: The causal LM (in eval mode).
        prompts: ``B`` prompt-id tensors, shape ``[P_b]``.
        dist: The sampling distribution.
        max_new_tokens: Completion length limit.
        eos_ids: Tokens that end a completion.
        pad_id: Token fed to finished rows.
        cache_arg: The model's KV-cache keyword (``cache`` or ``past_key_values``).
        shared: Length of the prefix every prompt shares (0: none).
        dedupe: Prefill identical prompts once.
        generator: RNG for sampling (on the model's device); the global RNG when None.
        greedy: Take the argmax instead of sampling.
        fixed_steps: Always run exactly ``max_new_tokens`` forward passes (sharded models need every rank
            to run the same number of passes).

    Returns:
        ``(completion_ids, logprobs, forward_s)``: ``B`` tensors ``[C_b]`` each, and the seconds spent in
        forward passes.
    """
    device = next(model.parameters()).device
    batch = len(prompts)
    rest_ids, rest_mask = left_pad([p[shared:] for p in prompts], pad_id)  # [B, L]
    width = rest_ids.shape[1]
    cache = new_cache(model.config, shared + width + max_new_tokens)
    forward_s = 0.0
    dedup = False
    if dedupe and batch > 1:  # identical prompts: prefill U <= B distinct rows
        rows, inverse = torch.unique(torch.cat([rest_ids, rest_mask], 1), dim=0, return_inverse=True)
        dedup = rows.shape[0] < batch
        if dedup:
            rest_ids, rest_mask, inverse = rows[:, :width], rows[:, width:], inverse.to(device)  # [U, L]
    rest_ids, rest_mask = rest_ids.to(device), rest_mask.to(device)

    def forward(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        nonlocal forward_s
        start = time.perf_counter()
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
            **{cache_arg: cache},
        )  # fmt: skip
        forward_s += time.perf_counter() - start
        return out.logits[:, -1]  # [rows, V]

    if shared:  # the common prefix: one row, then broadcast to the U rows
        start = time.perf_counter()
        prefill_shared(model, prompts[0][None, :shared].to(device), cache, cache_arg, rest_ids.shape[0])
        forward_s += time.perf_counter() - start
    # [rows, S + L]: the shared prefix, then each row's left-padded rest of the prompt
    attention_mask = torch.cat([rest_mask.new_ones((rest_ids.shape[0], shared)), rest_mask], dim=1)
    step_pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]  # [rows, L]
    logits = forward(rest_ids, attention_mask, step_pos)
    if dedup:  # unique rows -> every prompt's row
        cache.reorder_cache(inverse)
        logits, attention_mask, step_pos = logits[inverse], attention_mask[inverse], step_pos[inverse]
    eos = torch.tensor(eos_ids, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, logps = [], []
    for t in range(max_new_tokens):
        logp = dist.sampling_logprobs(logits)  # [B, V]
        nxt = logp.argmax(-1) if greedy else sample(logp, generator)  # [B]
        tokens.append(torch.where(finished, torch.full_like(nxt, -1), nxt))  # -1: after the end
        logps.append(logp.gather(-1, nxt[:, None]).squeeze(-1))  # [B]
        finished = finished | torch.isin(nxt, eos)
        if t == max_new_tokens - 1 or (finished.all() and not fixed_steps):
            break
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        step_pos = step_pos[:, -1:] + 1
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        logits = forward(nxt[:, None], attention_mask, step_pos)
    token_mat = torch.stack(tokens, 1).cpu()  # [B, C_max]
    logp_mat = torch.stack(logps, 1).float().cpu()  # [B, C_max]
    completion_ids, logprobs = [], []
    for row in range(batch):
        keep = token_mat[row] >= 0
        completion_ids.append(token_mat[row][keep].clone())
        logprobs.append(logp_mat[row][keep].clone())
    return completion_ids, logprobs, forward_s


def prompt_starts(batch: MicroBatch) -> torch.Tensor:
    """Column of each row's first real token (prompts are left padded). ``[U]`` long."""
    return batch.attention_mask.argmax(-1)


def completion_logits(
    model: nn.Module, batch: MicroBatch, cache_arg: str, shared: int = 0, boundary: int | None = None
) -> torch.Tensor:
    """Logits at positions ``P-1 .. P+C-1`` of every row (those that predict the completion). ``[U, C + 1, V]``.

    With a shared prefix of ``shared`` tokens the prefix runs once as one row and its KV cache is
    broadcast (with gradient) to every row, which then runs only the rest of its sequence: the last ``W``
    columns of ``input_ids``, with the prefix tokens and padding in them masked out. Same logits up to
    float rounding.

    With a trunk ``boundary`` ``j`` (:mod:`msgrpo.lm.trunk`): layers ``0 .. j-1`` run once per micro-batch,
    without gradient, and their output is kept on it (``batch.trunk``); this and every later pass runs
    layers ``j ..`` only, from those states (``batch.trunk``, shared by the micro-batch's copies). The same
    computation above the boundary, the same logits.
    """
    c = batch.completion_len
    ids, mask = batch.input_ids, batch.attention_mask
    if shared:
        starts = prompt_starts(batch)  # [U]
        total = ids.shape[1]
        width = total - int(starts.min()) - shared  # W: the longest row's rest
        first = int(starts[0])
        prefix = ids[:1, first : first + shared]  # [1, S]
        cols = torch.arange(total - width, total, device=ids.device)  # original column of each rest column
        rest_mask = mask[:, -width:] * (cols[None] >= (starts + shared)[:, None])  # [U, W]
        full_mask = torch.cat([rest_mask.new_ones((ids.shape[0], shared)), rest_mask], dim=1)  # [U, S + W]
        position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]  # [U, W]
        rest = ids[:, -width:]
    else:
        prefix, full_mask, rest = None, mask, ids
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)

    def run(prefix_inputs: dict, rest_inputs: dict) -> torch.Tensor:
        if prefix is None:
            return model(
                **rest_inputs, attention_mask=full_mask, position_ids=position_ids,
                logits_to_keep=c + 1, use_cache=False,  # logits at positions P-1 .. P+C-1; the last is not needed
            ).logits  # fmt: skip
        cache = DynamicCache()
        prefill_shared(model, prefix_inputs, cache, cache_arg, ids.shape[0])
        return model(
            **rest_inputs, attention_mask=full_mask, position_ids=position_ids, use_cache=True,
            logits_to_keep=c + 1, **{cache_arg: cache},
        ).logits  # fmt: skip

    if boundary is None:
        return run({"input_ids": prefix}, {"input_ids": rest})
    from msgrpo.lm.trunk import BoundaryStates, layers, outputs_of

    states = batch.trunk.get("states")
    if states is None or (states.boundary, states.shared) != (boundary, shared):  # once: layers 0 .. j-1
        start = time.perf_counter()
        with torch.no_grad(), layers(model, 0, boundary), outputs_of(model, boundary - 1) as captured:
            run({"input_ids": prefix}, {"input_ids": rest})
        TRUNK_SECONDS[0] += time.perf_counter() - start
        prefix_states = captured[0] if prefix is not None else None
        states = batch.trunk["states"] = BoundaryStates(boundary, shared, prefix_states, captured[-1])
    with layers(model, boundary):  # every pass: layers j .. from the boundary states
        return run({"inputs_embeds": states.prefix}, {"inputs_embeds": states.rest})
