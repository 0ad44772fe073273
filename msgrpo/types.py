"""Typed carriers that flow through an MS-GRPO iteration.

Rollout engine -> ``Episode`` (a list of ``Step``) -> credit assigner and sampler -> ``StepSample``
(one single-turn training sample per chosen step) -> ``MicroBatch`` (padded tensors) -> loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Step:
    """One environment step of one episode, as the language agent took it.

    Attributes:
        observation: The user-message text the agent saw (current state only, no history).
        prompt_ids: Token ids of the chat-formatted prompt. Shape ``[P]``, long.
        completion_ids: Token ids the policy generated (EOS included when emitted). Shape ``[C]``, long.
        logprobs: Log-probabilities of ``completion_ids`` under the rollout sampling distribution.
            Shape ``[C]``, float32.
        text: The decoded completion (for parsing and logging only; never re-tokenised).
        action: The domain action executed (the fallback action when ``valid`` is False).
        valid: Whether the completion named a valid action.
        reward: The step reward, format penalty included.
    """

    observation: str
    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    logprobs: torch.Tensor
    text: str
    action: int
    valid: bool
    reward: float


@dataclass
class Episode:
    """One episode of a group.

    Attributes:
        group_id: Index of the group; every episode of a group shares its reset seed.
        seed: The reset seed of the group.
        steps: The steps, in order.
        terminated: The game ended by its own rules (goal, hole, death).
        truncated: The game hit its step or round limit.
        success: The game's notion of success (goal reached, survived...).
        error: The error message when the environment raised mid-episode, else None.
        game: Index of the episode's game among the distinct games of its rollout (0 when it played one
            game): the steps of one game share its rules' token prefix, so the update packs them together
            (:attr:`StepSample.prefix_group`).
    """

    group_id: int
    seed: int
    steps: list[Step] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    success: bool = False
    error: str | None = None
    game: int = 0

    @property
    def done(self) -> bool:
        """Whether the episode has ended for any reason."""
        return self.terminated or self.truncated or self.error is not None

    @property
    def total_reward(self) -> float:
        """The episode return: the sum of its step rewards."""
        return float(sum(s.reward for s in self.steps))

    @property
    def length(self) -> int:
        """Number of steps taken."""
        return len(self.steps)

    @property
    def invalid_steps(self) -> int:
        """Number of steps whose completion named no valid action."""
        return sum(not s.valid for s in self.steps)

    @property
    def rewards(self) -> torch.Tensor:
        """Per-step rewards. Shape ``[T]``, float32."""
        return torch.tensor([s.reward for s in self.steps], dtype=torch.float32)


@dataclass
class StepSample:
    """A single-turn training sample made from one step.

    Attributes:
        prompt_ids: Shape ``[P]``, long.
        completion_ids: Shape ``[C]``, long.
        old_logprobs: Rollout log-probs of the completion tokens. Shape ``[C]``.
        advantage: The advantage every completion token carries.
        ref_logprobs: Reference-policy log-probs, or None when no KL term is used. Shape ``[C]``.
        prefix_group: Samples of one group (the steps of one game of a mixture, :attr:`Episode.game`)
            likely share a long prompt prefix; a micro-batch holds one group's samples only, so that
            prefix runs once (:mod:`msgrpo.lm.prefix`). A packing hint: it changes no number.
    """

    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    old_logprobs: torch.Tensor
    advantage: float
    ref_logprobs: torch.Tensor | None = None
    prefix_group: int = 0

    @property
    def num_tokens(self) -> int:
        """Prompt plus completion length."""
        return int(self.prompt_ids.numel() + self.completion_ids.numel())


@dataclass
class MicroBatch:
    """Padded tensors for one forward/backward pass.

    Prompts are left-padded to a common length ``P`` and completions right-padded to ``C``, so every
    completion starts at column ``P`` and logits are only needed for the last ``C + 1`` positions.

    Attributes:
        input_ids: ``[B, P + C]`` long.
        attention_mask: ``[B, P + C]`` long (1 = real token).
        completion_mask: ``[B, C]`` float (1 = real completion token).
        old_logprobs: ``[B, C]`` float.
        advantages: ``[B]`` float.
        ref_logprobs: ``[B, C]`` float or None.
        rows: ``[B]`` long, or None. Identical samples (same prompt and completion, e.g. the episodes of
            a group in the same state choosing the same move) share one row of ``input_ids`` and
            ``attention_mask``, which then hold ``U <= B`` rows, and ``rows[b]`` is sample ``b``'s row.
            None means one row per sample (``U = B``).
        trunk: Where the frozen trunk's boundary states of this micro-batch are kept once computed
            (:mod:`msgrpo.lm.trunk`; key ``"states"``). Not a constructor field: copies of the micro-batch
            (Lightning moves a batch to the device by copying it) share it, so every pass of the iteration
            finds the states whichever copy computed them.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    trunk: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def blank(cls, pad_id: int) -> MicroBatch:
        """A one-row micro-batch that contributes nothing (no real completion token, zero advantage): the
        padding a rank runs so that every rank makes the same forward and backward passes."""
        return cls(
            input_ids=torch.full((1, 2), pad_id, dtype=torch.long),
            attention_mask=torch.tensor([[1, 0]]),  # the completion column is padding
            completion_mask=torch.zeros((1, 1)),
            old_logprobs=torch.zeros((1, 1)),
            advantages=torch.zeros(1),
            ref_logprobs=torch.zeros((1, 1)),
        )

    @property
    def row_mask(self) -> torch.Tensor:
        """``[U, C]`` bool: the real completion tokens of each distinct row (completions are right padded)."""
        return self.attention_mask[:, -self.completion_len :].bool()

    @property
    def num_tokens(self) -> int:
        """Real completion tokens of this micro-batch's samples."""
        return int(self.completion_mask.sum())

    def per_sample(self, per_row: torch.Tensor) -> torch.Tensor:
        """Expand a ``[U, ...]`` result computed on the distinct rows of ``input_ids`` to ``[B, ...]``."""
        return per_row if self.rows is None else per_row[self.rows]

    @property
    def completion_len(self) -> int:
        """``C``: the padded completion length."""
        return int(self.completion_mask.shape[1])


@dataclass
class RolloutStats:
    """What one iteration's rollout played, for the ``rollout/*`` and ``perf/rollout*`` metrics.

    Attributes:
        returns: ``[E]`` episode returns.
        success: ``[E]`` 1.0 for a success.
        length: ``[E]`` steps taken.
        invalid: ``[E]`` steps whose completion named no valid action.
        error: ``[E]`` 1.0 when the environment raised.
        distinct: Share of distinct completion texts among all steps.
        rollout_s: Wall seconds of the rollout (reference scoring and re-scoring included).
        forward_s: Seconds inside model forward passes.
        generated_tokens: Completion tokens generated.
        logprob_mismatch: Largest ``|log-prob|`` difference between the rollout's decoding and the
            update's re-scoring of the same tokens (None when not re-scored).
    """

    returns: torch.Tensor
    success: torch.Tensor
    length: torch.Tensor
    invalid: torch.Tensor
    error: torch.Tensor
    distinct: float
    rollout_s: float
    forward_s: float
    generated_tokens: int
    logprob_mismatch: float | None = None

    @classmethod
    def of(cls, episodes: list[Episode], rollout_s: float, forward_s: float, generated_tokens: int) -> RolloutStats:
        texts = [s.text for e in episodes for s in e.steps]
        return cls(
            returns=torch.tensor([e.total_reward for e in episodes]),
            success=torch.tensor([float(e.success) for e in episodes]),
            length=torch.tensor([float(e.length) for e in episodes]),
            invalid=torch.tensor([float(e.invalid_steps) for e in episodes]),
            error=torch.tensor([float(e.error is not None) for e in episodes]),
            distinct=len(set(texts)) / max(len(texts), 1),
            rollout_s=rollout_s,
            forward_s=forward_s,
            generated_tokens=generated_tokens,
        )


@dataclass
class MiniBatch:
    """The unit of one optimizer step: micro-batches whose gradients are accumulated.

    Attributes:
        micro_batches: Micro-batches, each at most the token budget.
        num_tokens: Real completion tokens over all micro-batches (token-mean normaliser).
        num_sequences: Samples over all micro-batches (sequence-mean normaliser).
        rollout_stats: Per-episode rollout statistics for metric updates; attached to the first
            mini-batch of an iteration only, else None.
    """

    micro_batches: list[MicroBatch]
    num_tokens: int
    num_sequences: int
    rollout_stats: RolloutStats | None = None
