"""Strategy handling (``msgrpo.sharding``): one object per strategy, one owner of the lockstep flag."""

from types import SimpleNamespace

import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

from msgrpo.sharding import FSDP, FSDP2, LockstepPolicy, Sharding


def _trainer(strategy, world):
    return SimpleNamespace(strategy=strategy, world_size=world)


def test_each_strategy_gets_its_layout_and_lockstep_only_when_sharded_on_several_ranks(tiny_policy):
    cases = [
        (None, 1, Sharding, False),
        (SingleDeviceStrategy(device=torch.device("cpu")), 1, Sharding, False),
        (DDPStrategy(), 2, Sharding, False),
        (FSDPStrategy(), 2, FSDP, True),
        (FSDPStrategy(), 1, FSDP, False),
        (ModelParallelStrategy(), 2, FSDP2, True),
    ]
    for strategy, world, layout, lockstep in cases:
        sharding = Sharding.of(None if strategy is None else _trainer(strategy, world))
        assert type(sharding) is layout, strategy
        assert sharding.lockstep is lockstep
        sharding.attach(tiny_policy)
        assert tiny_policy.lockstep is lockstep  # the policy's flag is set here and nowhere else
        assert sharding.adapter_only_checkpoints is (layout is Sharding)


def test_players_in_lockstep_make_dummy_calls_until_every_rank_is_done(tiny_policy):
    live_elsewhere = iter([True, True, False])  # another rank still plays for two more calls
    calls = []
    agent = LockstepPolicy(tiny_policy, lambda flag: calls.append(flag) or (flag or next(live_elsewhere)))
    prompts = [torch.tensor([1, 2, 3])]
    gen = agent.generate(prompts, greedy=True)
    assert len(gen.completion_ids) == 1 and calls == [True]
    agent.finish()
    assert calls == [True, False, False, False]
    # the rest of the rollout's Agent protocol is the policy's own
    assert agent.encode == tiny_policy.encode and agent.response_prefix == tiny_policy.response_prefix
    assert agent.lockstep is True
