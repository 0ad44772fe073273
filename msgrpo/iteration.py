"""One MS-GRPO iteration's data: the algorithm on one page.

    group seeds --rollout (lockstep, one batched generate call per env step)--> episodes
    episodes --(healthy only)--> credit assigner --> per-step advantages A[e][t]
             --> sampler (weights: mean |A_t| per episode) --> chosen episodes (x importance weights)
             --> one single-turn sample per chosen step --> shuffled mini-batches of micro-batches
             --> (KL penalty) reference log-probs of every sample
             --> (reduced precision) the samples' rollout log-probs re-scored as the update scores them

:func:`run_iteration` is the whole page; :func:`build_iteration` is its pure middle (no model). What the
rollout needs of the training module is written down as :class:`RolloutHost`; the update comes after it
(:class:`msgrpo.module.MSGRPOModule`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from msgrpo.batching import minibatches, step_samples
from msgrpo.components.credit import CreditAssigner, episode_returns, episode_weights
from msgrpo.components.samplers import EpisodeSampler
from msgrpo.game import TextGame
from msgrpo.policy import LanguagePolicy
from msgrpo.rollout import RolloutTiming, play
from msgrpo.types import Episode, MiniBatch, RolloutStats

T = TypeVar("T")


class RolloutHost(Protocol):
    """What an iteration needs of the training module (:class:`msgrpo.module.MSGRPOModule` provides it).

    Attributes:
        policy: The policy to play and score with.
        needs_reference: Whether samples need reference log-probs (a KL penalty).
        rescores_old_logprobs: Whether the samples' old log-probs are re-scored by the update's own
            whole-sequence pass (see :func:`rescore_old_logprobs`).
    """

    policy: LanguagePolicy
    needs_reference: bool
    rescores_old_logprobs: bool

    def lockstep(self) -> AbstractContextManager[LanguagePolicy]:
        """The policy to play episodes with (under sharding: every rank makes the same generate calls)."""

    def run_sharded(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` where the strategy's model can run (precision context, FSDP1's forward redirection)."""


@dataclass
class IterationSettings:
    """How an iteration plays and batches (the data module's settings)."""

    group_size: int
    num_minibatches: int
    update_epochs: int
    token_budget: int
    on_env_error: str = "record"
    env_step_timeout_s: float | None = None


def run_iteration(
    host: RolloutHost,
    game: TextGame | list[TextGame],
    credit_assigner: CreditAssigner,
    sampler: EpisodeSampler,
    settings: IterationSettings,
    group_seeds: list[int],
    generators: tuple[torch.Generator, torch.Generator],
    equalize: Callable[[list[MiniBatch]], Any] | None = None,
) -> tuple[list[MiniBatch], list[Episode]]:
    """Roll out, assign credit, sample episodes, batch them and score the reference: one iteration's data.

    Args:
        host: The training module.
        game: The game, or one game per group (a mixture of settings).
        credit_assigner: Rewards -> per-step advantages.
        sampler: Which episodes to train on.
        settings: Group size and batching.
        group_seeds: One reset seed per group.
        generators: (token sampling RNG on the model's device, CPU RNG for the sampler and shuffles).
        equalize: Pads the mini-batches so every rank runs the same passes (several ranks), or None.

    Returns:
        The mini-batches (at least one; the first carries the :class:`RolloutStats`) and the episodes.
    """
    sampling, cpu = generators
    timing = RolloutTiming()

    def roll_out() -> list[Episode]:
        with host.lockstep() as agent:
            return play(
                agent, game, group_seeds, settings.group_size, generator=sampling,
                on_env_error=settings.on_env_error,  # type: ignore[arg-type]
                timing=timing, env_step_timeout_s=settings.env_step_timeout_s,
            )  # fmt: skip

    episodes = host.run_sharded(roll_out)
    pad_id = host.policy.tokenizer.pad_token_id
    data = build_iteration(
        episodes, credit_assigner, sampler, num_minibatches=settings.num_minibatches,
        update_epochs=settings.update_epochs, token_budget=settings.token_budget, pad_id=pad_id, generator=cpu,
    )  # fmt: skip
    batches = data.batches or [MiniBatch([], num_tokens=0, num_sequences=0)]
    if equalize is not None:
        equalize(batches)
    mismatch = None
    if host.needs_reference or host.rescores_old_logprobs:
        start = time.perf_counter()
        if host.needs_reference:
            host.run_sharded(lambda: attach_reference(host.policy, batches))
        if host.rescores_old_logprobs:
            mismatch = host.run_sharded(lambda: rescore_old_logprobs(host.policy, batches))
        timing.total_s += time.perf_counter() - start
    stats = RolloutStats.of(episodes, timing.total_s, timing.forward_s, timing.generated_tokens)
    stats.logprob_mismatch = mismatch
    batches[0].rollout_stats = stats
    return batches, episodes


def attach_reference(policy: LanguagePolicy, batches: list[MiniBatch]) -> None:
    """Score every micro-batch under the reference policy (``ref_logprobs``, ``[B, C]``)."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    for mini in batches:
        for micro in mini.micro_batches:
            ref = policy.reference_logprobs(move_data_to_device(micro, policy.device)).cpu()  # [U, C]
            micro.ref_logprobs = micro.per_sample(ref)


@torch.no_grad()
def rescore_old_logprobs(policy: LanguagePolicy, batches: list[MiniBatch]) -> float:
    """Replace every micro-batch's ``old_logprobs`` (``[B, C]``, from the rollout's one-token-at-a-time
    decoding) by the policy's own whole-sequence scores, the pass the update makes.

    In float32 the two agree to float error; in bf16 they round differently (measured on CPUs with
    AMX-BF16: up to 5.5e-3 in log-prob on a tiny model), so the first update's importance ratio would not
    be 1 and the clip would act on rounding noise. The tokens were still sampled from the rollout's
    numbers; this is the same re-scoring verl does by default. A token the re-scoring puts outside a
    truncated support (``-inf``) keeps its rollout log-prob.

    Returns:
        The largest ``|rescored - rollout|`` over real completion tokens (``rollout/logprob_mismatch``).
    """
    from lightning.fabric.utilities.apply_func import move_data_to_device

    worst = 0.0
    for mini in batches:
        for micro in mini.micro_batches:
            scores = policy.sampling_logprobs(move_data_to_device(micro, policy.device))  # [U, C]
            new = micro.per_sample(scores.float().cpu())  # [B, C]
            real = micro.completion_mask.bool() & torch.isfinite(new)
            if real.any():
                worst = max(worst, float((new - micro.old_logprobs).abs()[real].max()))
            micro.old_logprobs = torch.where(real, new, micro.old_logprobs)
    return worst


@dataclass
class IterationData:
    """What an iteration trains on.

    Attributes:
        batches: The mini-batches, ``update_epochs x num_minibatches`` of them (fewer when there are fewer
            step samples than mini-batches; none when no episode can be trained on).
        healthy: ``[H]`` indices of the episodes that ended without an environment error; only these
            enter group statistics and the update.
        chosen: ``[K]`` indices (into all episodes) of the sampled episodes.
        advantages: Per-step advantages of every episode (``[T_e]``; zeros for errored ones).
    """

    batches: list[MiniBatch]
    healthy: torch.Tensor
    chosen: torch.Tensor
    advantages: list[torch.Tensor]


def build_iteration(
    episodes: list[Episode],
    credit_assigner: CreditAssigner,
    sampler: EpisodeSampler,
    *,
    num_minibatches: int,
    update_epochs: int,
    token_budget: int,
    pad_id: int,
    generator: torch.Generator,
) -> IterationData:
    """Credit, sampling and batching of one iteration's episodes.

    Episodes whose environment raised or timed out are left out of everything: their partial returns
    would shift their group mates' advantages, and their steps are not trained on. A group with one
    healthy episode gives it advantage 0.

    Args:
        episodes: The rollout, ordered group by group.
        credit_assigner: Rewards -> per-step advantages.
        sampler: Which episodes to train on; it sees each episode's mean ``|A_t|``.
        num_minibatches: Optimizer steps per pass over the samples.
        update_epochs: Passes over the samples.
        token_budget: Max padded tokens per micro-batch.
        pad_id: Padding token id.
        generator: CPU RNG for the sampler and the shuffles.

    Returns:
        The mini-batches and what went into them.
    """
    healthy = [i for i, e in enumerate(episodes) if e.error is None and e.steps]
    advantages = [torch.zeros(e.length) for e in episodes]
    if not healthy:  # every episode failed (e.g. at reset): nothing to train on
        empty = torch.zeros(0, dtype=torch.long)
        return IterationData([], empty, empty, advantages)
    kept = [episodes[i] for i in healthy]
    rewards = [e.rewards for e in kept]
    group_ids = torch.tensor([e.group_id for e in kept])
    observations = [[s.observation for s in e.steps] for e in kept]
    kept_adv = credit_assigner.assign(rewards, group_ids, observations)  # H x [T_e]
    weights = episode_weights(kept_adv)  # [H] mean |A_t| per episode
    picked = sampler.sample(weights, episode_returns(rewards), group_ids, generator)  # [K]
    scales = sampler.importance_weights(weights, picked)  # [K] or None
    samples = step_samples(kept, kept_adv, picked, scales)
    batches: list[MiniBatch] = []
    for _ in range(update_epochs):
        k = min(num_minibatches, len(samples))  # fewer samples than mini-batches: one sample each
        if k:
            batches.extend(minibatches(samples, k, token_budget, pad_id, generator))
    index = torch.tensor(healthy)
    for i, a in zip(healthy, kept_adv):
        advantages[i] = a
    return IterationData(batches, index, index[picked], advantages)
