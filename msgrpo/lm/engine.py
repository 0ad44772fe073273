"""Rollout engines: how the policy's completions are generated, behind one small class.

The rollout (:func:`msgrpo.rollout.play`) asks the policy for completions; the policy hands the call to its
engine (``policy.engine``, a ``class_path`` slot: ``--model.policy.init_args.engine=TransformersGenerate``).
An engine returns the sampled token ids and their exact log-probs under the policy's sampling distribution
(:class:`~msgrpo.lm.distribution.SamplingDistribution`), and is told through :meth:`Engine.sync_weights`
whenever the policy's weights change (after every optimizer step, a trust-region restore, a checkpoint
load, a callback swapping weights in), so an engine holding its own copy of the weights (a vLLM or
llama.cpp server, an OpenVINO pipeline) can refresh it. An engine whose numerics differ from the update's
whole-sequence pass sets :attr:`Engine.numerics_differ`, and the training module then re-scores the sampled
tokens before the updates (``rescore_old_logprobs``), so the first update is still exactly on-policy.

Two engines ship: :class:`KVCacheEngine` (the default: one batched, KV-cached decoding loop with the shared
prompt prefix prefilled once) and :class:`TransformersGenerate` (transformers' own padded ``generate``:
any model it supports, and a check of the default's exactness: the same tokens and log-probs on the same
seeds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from msgrpo.lm import decoding
from msgrpo.lm.decoding import Generation, left_pad
from msgrpo.lm.distribution import sample

if TYPE_CHECKING:
    from msgrpo.policy import LanguagePolicy


class Engine(ABC):
    """Generates one completion per prompt for a :class:`~msgrpo.policy.LanguagePolicy`.

    Attributes:
        numerics_differ: The engine's log-probs round differently from the update's whole-sequence pass
            (another library, another precision): the old log-probs are re-scored before the updates.
    """

    numerics_differ: bool = False

    @abstractmethod
    def generate(
        self,
        policy: LanguagePolicy,
        prompts: list[torch.Tensor],
        generator: torch.Generator | None = None,
        greedy: bool = False,
        fixed_steps: bool = False,
    ) -> Generation:
        """Sample (or, ``greedy``, take the argmax of) one completion per prompt.

        Args:
            policy: The policy: its model, tokenizer, sampling distribution and decoding settings.
            prompts: ``B`` prompt-id tensors, ``[P_b]``.
            generator: RNG for sampling (on the model's device); the global RNG when None.
            greedy: Argmax decoding (evaluation).
            fixed_steps: Run exactly ``max_new_tokens`` forward passes (every rank of a sharded model runs
                the same passes).

        Returns:
            The completions (EOS included when emitted) and their log-probs under the sampling distribution.
        """

    def sync_weights(self, policy: LanguagePolicy) -> None:  # noqa: B027 - optional hook
        """The policy's weights changed: an engine with its own copy refreshes it. Default: nothing (the
        engine runs the policy's own model)."""


class KVCacheEngine(Engine):
    """The default: one batched, KV-cached decoding loop (:func:`msgrpo.lm.decoding.generate`), the common
    prompt prefix prefilled once and identical prompts once (``policy.share_prefill``)."""

    def generate(self, policy, prompts, generator=None, greedy=False, fixed_steps=False) -> Generation:
        completion_ids, logprobs, forward_s = decoding.generate(
            policy.model,
            prompts,
            policy.distribution,
            max_new_tokens=policy.max_new_tokens,
            eos_ids=policy.eos_ids,
            pad_id=policy.tokenizer.pad_token_id,
            cache_arg=policy.cache_arg,
            shared=0 if fixed_steps else policy.shared_prefix_len(prompts),
            dedupe=policy.share_prefill,
            generator=generator,
            greedy=greedy,
            fixed_steps=fixed_steps,
        )
        texts = policy.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Generation(completion_ids, logprobs, texts, forward_s)


class _Pick(LogitsProcessor):
    """Draws each step's tokens from the policy's sampling distribution (the default engine's draw, in the
    same order) and hands ``generate`` a one-hot choice, recording the chosen tokens' log-probs."""

    def __init__(self, policy: LanguagePolicy, generator: torch.Generator | None, greedy: bool) -> None:
        self.policy, self.generator, self.greedy = policy, generator, greedy
        self.logprobs: list[torch.Tensor] = []  # per step: [B]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = self.policy.distribution.sampling_logprobs(scores)  # [B, V]
        nxt = logp.argmax(-1) if self.greedy else sample(logp, self.generator)  # [B]
        self.logprobs.append(logp.gather(-1, nxt[:, None]).squeeze(-1).float())
        return torch.full_like(scores, float("-inf")).scatter_(1, nxt[:, None], 0.0)


class TransformersGenerate(Engine):
    """transformers' ``model.generate`` on the left-padded batch (no prefix sharing, no deduplication).

    The tokens are drawn from the policy's sampling distribution with the same random numbers as the default
    engine, so on the same seed both give the same completions and log-probs (up to float rounding of the
    logits). Slower on CPU (``benchmarks/rollout.py``); useful for models whose caches the default engine
    does not drive, and as a reference for it.
    """

    numerics_differ = True  # padded batches round otherwise than the update's pass: re-score

    def generate(self, policy, prompts, generator=None, greedy=False, fixed_steps=False) -> Generation:
        import time

        device = policy.device
        pad = policy.tokenizer.pad_token_id
        ids, mask = left_pad(prompts, pad)
        pick = _Pick(policy, generator, greedy)
        config = GenerationConfig(
            max_new_tokens=policy.max_new_tokens, do_sample=False, pad_token_id=pad,
            eos_token_id=None if fixed_steps else list(policy.eos_ids),  # fixed steps: never stop early
        )  # fmt: skip
        # transformers fills every unset field from the model's own generation config (a checkpoint's
        # repetition penalty, its EOS under fixed steps): a blank one there, so only the policy's distribution acts
        base = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
        saved, base.generation_config = base.generation_config, GenerationConfig()
        start = time.perf_counter()
        try:
            with torch.no_grad():
                out = policy.model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                    logits_processor=LogitsProcessorList([pick]),
                )  # fmt: skip
        finally:
            base.generation_config = saved
        forward_s = time.perf_counter() - start
        tokens = out[:, ids.shape[1] :].cpu()  # [B, C]
        logps = torch.stack(pick.logprobs, 1).cpu()  # [B, C]
        eos = torch.tensor(list(policy.eos_ids))
        completion_ids, logprobs = [], []
        for row in range(len(prompts)):
            ended = torch.isin(tokens[row], eos).nonzero()
            length = int(ended[0]) + 1 if len(ended) else tokens.shape[1]  # up to and with the first EOS
            completion_ids.append(tokens[row, :length].clone())
            logprobs.append(logps[row, :length].clone())
        texts = policy.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Generation(completion_ids, logprobs, texts, forward_s)
