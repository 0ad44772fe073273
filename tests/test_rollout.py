"""Lockstep rollout engine."""

import pytest
import torch

from msgrpo.components.games import FrozenLake
from msgrpo.rollout import RolloutTiming, play


class Exploding(FrozenLake):
    """Frozen Lake whose env raises on the second step of seed 2's episodes."""

    def act(self, env, text):
        if env.steps == 1 and env.np_random_seed == 2:
            raise RuntimeError("boom")
        return super().act(env, text)


def test_shapes_groups_and_shared_seeds(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=3, response_prefix="<action>")
    timing = RolloutTiming()
    episodes = play(policy, FrozenLake(), [11, 22, 33], 4, generator=torch.Generator().manual_seed(0), timing=timing)
    assert len(episodes) == 12
    assert [e.group_id for e in episodes] == [0] * 4 + [1] * 4 + [2] * 4
    assert [e.seed for e in episodes] == [11] * 4 + [22] * 4 + [33] * 4
    for e in episodes:
        assert 1 <= e.length <= 8 and e.done
        # all episodes of a group start from the same state
        assert e.steps[0].observation == episodes[e.group_id * 4].steps[0].observation
        for s in e.steps:
            assert s.prompt_ids.dtype == torch.long and s.prompt_ids.ndim == 1
            assert s.completion_ids.shape == s.logprobs.shape and 1 <= s.completion_ids.numel() <= 3
            assert (s.logprobs <= 0).all()
            assert s.reward == (0.0 if s.valid else -0.1) or s.reward in (1.0, 0.9)
        assert e.total_reward == sum(s.reward for s in e.steps)
    assert episodes[0].steps[0].observation != episodes[4].steps[0].observation  # groups differ
    # one batched generate call per environment step: as many calls as the longest episode
    assert timing.generate_calls == max(e.length for e in episodes)
    assert 0 < timing.forward_s <= timing.total_s


def test_same_seed_same_episodes(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=2, response_prefix="<action>")
    runs = [play(policy, FrozenLake(), [5], 3, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    for a, b in zip(*runs):
        assert [s.text for s in a.steps] == [s.text for s in b.steps]
        assert a.total_reward == b.total_reward


def test_env_fault_ends_only_that_episode(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=2)
    episodes = play(policy, Exploding(), [1, 2], 2, generator=torch.Generator().manual_seed(0))
    failed = [e for e in episodes if e.error]
    assert len(failed) == 2 and all(e.seed == 2 and "boom" in e.error and e.length == 1 for e in failed)
    assert all(e.error is None and e.length == 8 for e in episodes if e.seed == 1)


def test_each_group_can_play_its_own_setting(tiny_policy_factory):
    from msgrpo.components.games import Snake

    policy = tiny_policy_factory(
        max_new_tokens=1, response_prefix="<action>", allowed_tokens=["up", "down", "left", "right"]
    )
    one, two = Snake(num_opponents=1), Snake(num_opponents=2)
    episodes = play(policy, [one, two], [5, 5], 2, generator=torch.Generator().manual_seed(0))
    openings = [e.steps[0].observation for e in episodes]
    assert "Opponent 2" not in openings[0] and "Opponent 2" in openings[2]  # group 1 plays two opponents
    assert openings[0] == openings[1] and openings[2] == openings[3]  # a group shares its start
    with pytest.raises(ValueError, match="2 games for 3 groups"):
        play(policy, [one, two], [1, 2, 3], 1)


def test_a_mixture_generates_game_by_game_and_plays_as_each_game_alone(tiny_policy_factory):
    from msgrpo.components.games import Snake

    policy = tiny_policy_factory(
        max_new_tokens=1, response_prefix="<action>", allowed_tokens=["up", "down", "left", "right"]
    )
    one, two = Snake(num_opponents=1), Snake(num_opponents=2)
    timing = RolloutTiming()
    mixed = play(policy, [one, two, one], [5, 6, 7], 2, greedy=True, timing=timing)
    alone_one = play(policy, one, [5, 7], 2, greedy=True)
    alone_two = play(policy, two, [6], 2, greedy=True)
    for a, b in zip([*mixed[:2], *mixed[4:], *mixed[2:4]], [*alone_one, *alone_two]):
        assert [s.action for s in a.steps] == [s.action for s in b.steps]
        assert torch.equal(a.steps[0].prompt_ids, b.steps[0].prompt_ids)
        assert a.total_reward == b.total_reward
    # one generate call per game and environment step (each call shares its own game's prompt prefix)
    longest = [max(e.length for e in mixed[:2] + mixed[4:]), max(e.length for e in mixed[2:4])]
    assert timing.generate_calls == sum(longest)
    # each episode is tagged with its game (first appearance first), which the update packs by
    assert [e.game for e in mixed] == [0, 0, 1, 1, 0, 0]
    assert {e.game for e in alone_one} == {0}
