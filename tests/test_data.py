"""RolloutDataModule: one iteration's data, seeds per rank, validation of settings."""

import pytest
import torch
from fast_fit import plain_trainer

from msgrpo.components.credit import EpisodeReturn
from msgrpo.components.games import FrozenLake
from msgrpo.components.samplers import All, Uniform
from msgrpo.data import RolloutDataModule
from msgrpo.errors import ConfigError
from msgrpo.loss import MSGRPOLoss
from msgrpo.module import MSGRPOModule


def _module(policy, kl=0.0):
    return MSGRPOModule(policy, MSGRPOLoss(kl_coef=kl))


def test_iteration_builds_minibatches_with_stats(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=2, response_prefix="<action>")
    data = RolloutDataModule(
        FrozenLake(),
        EpisodeReturn(),
        Uniform(4),
        num_groups=2,
        group_size=3,
        num_minibatches=2,
        update_epochs=2,
        token_budget=2000,
    )
    batches = data.make_iteration(_module(policy), iteration=0)
    assert len(batches) == 4  # num_minibatches x update_epochs
    assert batches[0].rollout_stats is not None and all(b.rollout_stats is None for b in batches[1:])
    assert batches[0].rollout_stats.returns.shape == (6,)
    trained_steps = sum(b.num_sequences for b in batches[:2])
    chosen_steps = sum(b.num_sequences for b in batches[2:])
    assert trained_steps == chosen_steps > 0
    for b in batches:
        for mb in b.micro_batches:
            assert mb.input_ids.numel() <= 2000 or mb.input_ids.shape[0] == 1


def test_group_seeds_differ_by_rank_and_iteration_and_replay():
    data = RolloutDataModule(FrozenLake(), num_groups=4, group_size=2, seed=3)
    a = data.group_seeds(0, rank=0)
    assert a == data.group_seeds(0, rank=0)
    assert len(set(a + data.group_seeds(0, rank=1) + data.group_seeds(1, rank=0))) == 12


def test_reference_logprobs_attached_when_kl(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=2)
    policy.enable_reference()
    data = RolloutDataModule(FrozenLake(), sampler=All(), num_groups=1, group_size=2)
    batches = data.make_iteration(_module(policy, kl=0.1), iteration=0)
    mb = batches[0].micro_batches[0]
    assert mb.ref_logprobs is not None
    mask = mb.completion_mask.bool()
    # before any update the reference is the policy itself
    assert torch.allclose(mb.ref_logprobs[mask], mb.old_logprobs[mask], atol=1e-4)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        RolloutDataModule(FrozenLake(), group_size=1)
    with pytest.raises(ConfigError, match="num_episodes=100 exceeds the 16"):
        RolloutDataModule(FrozenLake(), sampler=Uniform(100), num_groups=2, group_size=8)
    with pytest.raises(ConfigError, match="unknown scenario"):
        RolloutDataModule(FrozenLake(), eval_scenarios=["moon"])


@pytest.mark.slow
def test_a_plain_trainer_plays_fresh_episodes_every_epoch(tiny_policy_factory, tmp_path):
    # no reload_dataloaders_every_n_epochs: the data module sets it, so every epoch is a new rollout
    policy = tiny_policy_factory(max_new_tokens=1, response_prefix="<action>")
    data = RolloutDataModule(FrozenLake(fallback="random", map_name=None), num_groups=2, group_size=2)
    played = []
    make_iteration = data.make_iteration

    def spy(module, iteration):
        played.append(iteration)
        return make_iteration(module, iteration)

    data.make_iteration = spy
    trainer = plain_trainer(tmp_path, max_epochs=3)
    trainer.fit(_module(policy), datamodule=data)
    assert played == [0, 1, 2]
    assert trainer.reload_dataloaders_every_n_epochs == 1


@pytest.mark.slow
def test_reloading_dataloaders_less_often_is_a_config_error(tiny_policy_factory, tmp_path):
    policy = tiny_policy_factory(max_new_tokens=1, response_prefix="<action>")
    data = RolloutDataModule(FrozenLake(), num_groups=1, group_size=2)
    trainer = plain_trainer(tmp_path, max_epochs=2, reload_dataloaders_every_n_epochs=2)
    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs must be 1"):
        trainer.fit(_module(policy), datamodule=data)


def test_train_scenarios_cycle_through_the_groups(tiny_policy_factory):
    from msgrpo.components.games import Snake

    policy = tiny_policy_factory(
        max_new_tokens=1, response_prefix="<action>", allowed_tokens=["up", "down", "left", "right"]
    )
    data = RolloutDataModule(Snake(), num_groups=3, group_size=2, train_scenarios=["train", "two-opponents"])
    data.make_iteration(_module(policy), iteration=0)
    opponents = [e.steps[0].observation.count("Opponent ") for e in data.last_episodes[::2]]
    assert opponents == [1, 2, 1]
    data.make_iteration(_module(policy), iteration=1)  # the cycle goes on where iteration 0 left it
    opponents = [e.steps[0].observation.count("Opponent ") for e in data.last_episodes[::2]]
    assert opponents == [2, 1, 2]
    with pytest.raises(ConfigError, match="train_scenarios must be a non-empty list"):
        RolloutDataModule(Snake(), train_scenarios=["moon"])


def test_a_mixture_is_balanced_over_iterations_and_ranks():
    from collections import Counter

    from msgrpo.components.games import Snake

    names = ["train", "poison", "two-opponents"]
    data = RolloutDataModule(Snake(), num_groups=8, group_size=2, train_scenarios=names)
    index = {id(game): name for game, name in zip(data.train_games, names)}
    counts = Counter(index[id(g)] for it in range(30) for g in data.group_games(it))
    assert counts == {"train": 80, "poison": 80, "two-opponents": 80}  # (was 90 / 90 / 60)
    assert [index[id(g)] for g in data.group_games(1)][:2] == ["two-opponents", "train"]  # 8 % 3 = 2 on
    # two ranks: rank 1 continues where rank 0 left off, and iteration 1 where rank 1 of iteration 0 did
    both = [index[id(g)] for it in range(3) for rank in range(2) for g in data.group_games(it, rank, world=2)]
    assert Counter(both) == {n: 16 for n in names}
    assert both == [names[i % 3] for i in range(48)]
