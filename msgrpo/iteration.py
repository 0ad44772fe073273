"""One MS-GRPO iteration's data, from played episodes to mini-batches: the algorithm on one page.

    episodes --(healthy only)--> credit assigner --> per-step advantages A[e][t]
             --> sampler (weights: mean |A_t| per episode) --> chosen episodes
             --> one single-turn sample per chosen step --> shuffled mini-batches of micro-batches

Pure: no Lightning, no model. The rollout (:func:`msgrpo.rollout.play`) comes before it and the update
(:class:`msgrpo.module.MSGRPOModule`) after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from msgrpo.batching import minibatches, step_samples
from msgrpo.components.credit import CreditAssigner, episode_returns, episode_weights
from msgrpo.components.samplers import EpisodeSampler
from msgrpo.types import Episode, MiniBatch


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
    picked = sampler.sample(episode_weights(kept_adv), episode_returns(rewards), group_ids, generator)  # [K]
    samples = step_samples(kept, kept_adv, picked)
    batches: list[MiniBatch] = []
    for _ in range(update_epochs):
        k = min(num_minibatches, len(samples))  # fewer samples than mini-batches: one sample each
        if k:
            batches.extend(minibatches(samples, k, token_budget, pad_id, generator))
    index = torch.tensor(healthy)
    for i, a in zip(healthy, kept_adv):
        advantages[i] = a
    return IterationData(batches, index, index[picked], advantages)
