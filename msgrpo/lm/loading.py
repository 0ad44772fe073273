"""Loading a policy's model and tokenizer: the offline presets, Hugging Face directories and hub ids, LoRA,
the chat-template fallback, and the few facts about a model the rest of the code needs."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from msgrpo.errors import ConfigError
from msgrpo.lm.models import CHATML_TEMPLATE, TinySettings, build_tiny
from msgrpo.lm.pretrained import SMOLLM2, smollm2_dir

TINY = "tiny"


@dataclass
class LoraSettings:
    """peft LoRA adapter settings.

    Attributes:
        r: Adapter rank.
        alpha: LoRA alpha (scaling = alpha / r).
        dropout: Dropout on the adapter input. Must be 0: the policy scores with dropout off, exactly as
            the rollout sampled (any other value would make the first update's importance ratio differ
            from 1), so a non-zero value is refused instead of being silently ignored.
        target_modules: Module names to adapt, or ``"all-linear"``.
        layers: Indices of the decoder layers to adapt (peft's ``layers_to_transform``; negative counts
            from the top: ``[-4, -3, -2, -1]`` are the last four); None = every layer. The backward pass
            stops at the lowest adapted layer, so adapting only the top layers makes the update much
            cheaper.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = field(default="all-linear")
    layers: list[int] | None = None


def _is_local(path: str) -> bool:
    return os.path.isdir(os.path.expanduser(path))


def load_model_and_tokenizer(
    name: str, dtype: torch.dtype, trust_remote_code: bool, seed: int, tiny: TinySettings | None
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The causal LM and tokenizer named by ``model_name_or_path`` (``"tiny"``, ``"smollm2"``, a local
    directory or a hub id); a one-line :class:`ConfigError` when it cannot load."""
    if name == TINY:
        model, tokenizer = build_tiny(seed, tiny)
        return model.to(dtype), tokenizer
    if name == SMOLLM2:
        name = smollm2_dir()
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not _is_local(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ConfigError(f"model path {name!r} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        where = "local directory" if _is_local(name) else "hub id"
        hint = " (HF_HUB_OFFLINE=1: only models already in the local cache can load)" if offline else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot load a causal LM from {where} {name!r}{hint}: {first}") from err
    return model, tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Left padding, a pad token (EOS when there is none) and a chat template (ChatML, with a warning,
    when the tokenizer has none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn(f"tokenizer of {name!r} has no chat template; using the ChatML fallback", stacklevel=3)
        tokenizer.chat_template = CHATML_TEMPLATE


def eos_ids(tokenizer: PreTrainedTokenizerBase, model: nn.Module) -> list[int]:
    """Every token id that ends a completion (the tokenizer's EOS and the generation config's)."""
    configured = model.generation_config.eos_token_id
    configured = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    return sorted({i for i in [tokenizer.eos_token_id, *configured] if i is not None})


def single_token_ids(tokenizer: PreTrainedTokenizerBase, strings: list[str]) -> list[int]:
    """The single token id of each string (``allowed_tokens``); a clear error for anything else."""
    if not strings:
        raise ConfigError(
            "allowed_tokens is empty: give at least one token, or null for no constraint", setting="allowed_tokens"
        )
    ids = []
    for s in strings:
        enc = tokenizer.encode(s, add_special_tokens=False)
        if len(enc) != 1:
            pieces = tokenizer.convert_ids_to_tokens(enc)
            raise ConfigError(
                f"allowed_tokens: {s!r} is {len(enc)} tokens {pieces} of this tokenizer; every entry "
                "must be exactly one token (check leading spaces)",
                setting="allowed_tokens",
            )
        ids.append(enc[0])
    return sorted(set(ids))


def apply_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    """``model`` wrapped with a trainable peft LoRA adapter (the base frozen)."""
    from peft import LoraConfig, get_peft_model

    layers = None
    if lora.layers is not None:
        n = int(model.config.num_hidden_layers)
        if not lora.layers or any(not -n <= i < n for i in lora.layers):
            raise ConfigError(
                f"lora.layers must name decoder layers in [-{n}, {n - 1}] (this model has {n})",
                setting="lora.layers",
                value=lora.layers,
            )
        layers = sorted({i % n for i in lora.layers})
    targets = lora.target_modules
    if layers is not None and isinstance(targets, str):  # peft needs names with layers_to_transform
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, m in model.named_modules()
                if isinstance(m, nn.Linear) and ".layers." in name
            }
        )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every parameter frozen (the KL reference)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's vocabulary (token -> id): equal fingerprints, equal token ids."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocab.encode("utf-8")).hexdigest()


def cache_argument(model: nn.Module) -> str:
    """The name under which this model's forward takes a KV cache (``cache`` since transformers 5.24,
    ``past_key_values`` before)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def enable_checkpointing(model: nn.Module) -> None:
    """Turn on activation checkpointing once (``activation_checkpointing_enable`` in newer transformers)."""
    enabled: Any = getattr(model, "is_activation_checkpointing", None)
    if enabled is None:
        enabled = getattr(model, "is_gradient_checkpointing", False)
    if not enabled:
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
