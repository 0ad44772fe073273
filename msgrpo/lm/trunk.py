"""The frozen trunk: with adapters on the top decoder layers only, the layers below run once per micro-batch.

Under LoRA on the top ``k`` layers (``lora.layers``), every layer below them has no trainable parameter: for
a given token sequence it computes the same hidden states in the update's forward pass, in every
trust-region measuring pass, in the adapter-disabled reference and in the re-scoring of old log-probs.
:func:`trunk_boundary` finds the first adapted layer ``j``; :class:`Trunk` runs layers ``0 .. j-1`` of a
micro-batch once, without gradient, keeps their output (the boundary states) on the micro-batch, and every
later pass runs only layers ``j ..`` (and the final norm and head) from them, through the model's own
forward with ``inputs_embeds`` = the boundary states. The computation above the boundary is the one the
whole model makes, so log-probs and gradients are the uncached path's (tested).

It switches itself off, with one line saying why, where it cannot hold: full fine-tuning or adapters on
every layer (nothing below the adapters), trainable embeddings, sharded parameters (every rank must run the
same passes), and models whose layers it cannot find (a ``model.layers`` list of decoder layers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


def _inner(model: nn.Module) -> nn.Module | None:
    """The decoder stack (``LlamaModel``, ``Qwen2Model``, ...) inside a causal LM, peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    return inner if isinstance(getattr(inner, "layers", None), nn.ModuleList) else None


VERIFIED = ("llama", "mistral", "qwen2", "qwen3")
"""Model types whose decoder forward passes ``inputs_embeds`` straight to the first layer run and treats every
layer alike (with one kind of attention), so a cut at any layer computes what the whole model does above it.
Others may scale the embeddings inside the forward (Granite) or pick each layer's mask or rotary embedding
by its position in the list (Gemma 2 and 3, mixed sliding-window layers): there the cut is off."""


def trunk_boundary(model: nn.Module) -> tuple[int | None, str]:
    """``(j, why)``: the first decoder layer with a trainable parameter when the layers below it and the
    embeddings have none (``j >= 1``) and the architecture is one the cut is verified for, else
    ``(None, the reason)``."""
    inner = _inner(model)
    if inner is None:
        return None, "the model has no model.layers list of decoder layers"
    config = getattr(inner, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in VERIFIED:
        return None, f"the cut is verified for {', '.join(VERIFIED)} models, not {kind}"
    if len(set(getattr(config, "layer_types", None) or ["one"])) > 1:
        return None, "the layers mix attention kinds (layer_types), picked by their position in the list"
    trainable = [any(p.requires_grad for p in layer.parameters()) for layer in inner.layers]
    if not any(trainable):
        return None, "no decoder layer is trained"
    j = trainable.index(True)
    if j == 0:
        return None, "the first decoder layer is trained (full fine-tuning, or adapters on every layer)"
    if any(p.requires_grad for p in inner.embed_tokens.parameters()):
        return None, "the embeddings are trained"
    return j, ""


@contextmanager
def layers(model: nn.Module, start: int, stop: int | None = None) -> Iterator[None]:
    """Run only decoder layers ``start .. stop-1`` in the model's forward passes inside the block.

    Their attention modules are renumbered from 0 for the block (a KV cache filled inside it holds their
    keys and values as layers ``0 ..``, so its length and the causal mask are those of the first layer
    run) and put back after.
    """
    inner = _inner(model)
    saved = inner.layers
    chosen = list(saved)[start:stop]
    numbers = [getattr(getattr(layer, "self_attn", None), "layer_idx", None) for layer in chosen]
    inner._modules["layers"] = nn.ModuleList(chosen)
    try:
        for i, layer in enumerate(chosen):
            if numbers[i] is not None:
                layer.self_attn.layer_idx = i
        yield
    finally:
        inner._modules["layers"] = saved
        for layer, number in zip(chosen, numbers):
            if number is not None:
                layer.self_attn.layer_idx = number


@dataclass
class BoundaryStates:
    """Layer ``j``'s input for a micro-batch: ``prefix [1, S, H]`` (the shared prefix, when it runs once)
    and ``rest [U, W, H]`` (the columns of every row that the scoring pass runs after it)."""

    boundary: int
    shared: int
    prefix: torch.Tensor | None
    rest: torch.Tensor


@contextmanager
def outputs_of(model: nn.Module, index: int) -> Iterator[list[torch.Tensor]]:
    """The outputs of decoder layer ``index`` in the forward passes made inside the block, detached, in order."""
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append((output[0] if isinstance(output, tuple) else output).detach())

    handle = _inner(model).layers[index].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


class Trunk:
    """Where the policy's model is cut, decided once when the policy is built (which parameters train is
    fixed then; peft turns ``requires_grad`` off while an adapter is disabled, so it is not read later).

    Args:
        model: The policy's model, adapters applied.
        enabled: Whether to cut at all (the policy's ``cache_trunk`` setting).
        announce: Say once, in one line, when it cannot hold (under LoRA, where it is expected to).
    """

    def __init__(self, model: nn.Module, enabled: bool = True, announce: bool = True) -> None:
        self.boundary, self.why = trunk_boundary(model) if enabled else (None, "cache_trunk is off")
        self.announce = announce and enabled
        self._said = False

    def cut(self, lockstep: bool) -> int | None:
        """The boundary for a scoring pass now (None under sharded parameters), saying once why there is none."""
        boundary, why = self.boundary, self.why
        if boundary is not None and lockstep:
            boundary, why = None, "parameters are sharded (every rank must run the same passes)"
        if boundary is None and self.announce and not self._said:
            self._said = True
            warnings.warn(f"frozen-trunk scoring is off: {why}; every pass runs every layer", stacklevel=3)
        return boundary
