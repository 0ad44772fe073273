"""Reference players (``msgrpo.players``) and the games' own: exact Frozen Lake value iteration, random and
greedy players, play_reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

import msgrpo.components.games.frozen_lake as frozen_lake
from msgrpo.components.games.frozen_lake import (
    FrozenLake,
    FrozenLakeOptimal,
    RandomMapFrozenLake,
    best_action,
    frozen_lake_q_values,
    optimal_success_probability,
)
from msgrpo.components.games.snake import Snake, SnakeGreedy
from msgrpo.evaluation import build_panel, summarize
from msgrpo.players import RandomPolicy, ReferencePolicy, play_reference

LEFT, DOWN, RIGHT, UP = range(4)


def values(desc: list[str], slippery: bool, horizon: int) -> np.ndarray:
    """V[k, s] of a hand-made map."""
    return frozen_lake_q_values(FrozenLakeEnv(desc=desc, is_slippery=slippery), horizon).max(-1)


def hand_env(desc: list[str], slippery: bool, max_steps: int) -> RandomMapFrozenLake:
    """A RandomMapFrozenLake whose current map is ``desc`` (player on S, no steps taken)."""
    env = RandomMapFrozenLake(size=len(desc), slippery=slippery, max_steps=max_steps)
    env.reset(seed=0)
    env.lake = FrozenLakeEnv(desc=desc, is_slippery=slippery)
    env.lake.reset(seed=0)
    return env


# ----- value iteration on hand-solvable maps ---------------------------------------------------------------
def test_slippery_2x2_open_map_exact_values():
    # S F      states 0 1      slippery: the intended move and both perpendicular ones, 1/3 each;
    # F G             2 3      bumping into the edge leaves the player in place.
    # From 1, "right": right (stay), up (stay), down (goal) -> goal 1/3, else still in 1; "down" also risks
    # going back to 0. So V_k(1) = 1 - (2/3)^k, and by symmetry V_k(2) = 1 - (2/3)^k.
    # From 0, "down" or "right" goes to 0, 1, 2 with 1/3 each: V_k(0) = (V(0) + V(1) + V(2)) / 3 at k - 1.
    #   V_1(0) = 0 (the goal is two cells away)
    #   V_2(0) = (0 + 1/3 + 1/3) / 3 = 2/9
    #   V_3(0) = (2/9 + 5/9 + 5/9) / 3 = 4/9
    v = values(["SF", "FG"], slippery=True, horizon=3)
    assert v[1, 0] == pytest.approx(0.0, abs=1e-12)
    assert v[2, 0] == pytest.approx(2 / 9, abs=1e-12)
    assert v[3, 0] == pytest.approx(4 / 9, abs=1e-12)
    for k in range(4):
        assert v[k, 1] == pytest.approx(1 - (2 / 3) ** k, abs=1e-12)
        assert v[k, 2] == pytest.approx(1 - (2 / 3) ** k, abs=1e-12)
    assert v[:, 3].tolist() == [0.0] * 4  # the goal is terminal: nothing more to gain there
    q = frozen_lake_q_values(FrozenLakeEnv(desc=["SF", "FG"], is_slippery=True), 3)
    # From 1 with 3 steps: right = 1/3 + 2/3 * V_2(1) = 1/3 + 2/3 * 5/9 = 19/27;
    # down = 1/3 + 1/3 * V_2(0) + 1/3 * V_2(1) = 1/3 + 2/27 + 5/27 = 16/27.
    assert q[3, 1, RIGHT] == pytest.approx(19 / 27, abs=1e-12)
    assert q[3, 1, DOWN] == pytest.approx(16 / 27, abs=1e-12)
    assert best_action(q[:, 1], 3) == RIGHT


def test_slippery_2x2_with_hole_walks_into_the_wall():
    # S H      From S: "right"/"down"/"up" each risk the hole 1/3; "left" moves left (stay), up (stay) or
    # F G      down (to 2), never into the hole. From 2, "down" stays (down, left) or reaches G (right): the
    # goal w.p. 1/3 a step and never anything worse, so V_k(2) = 1 - (2/3)^k.
    # left - down = V_{k-1}(0) / 3 >= 0, so "left" is optimal from S at every budget, and
    #   V_k(0) = 2/3 V_{k-1}(0) + 1/3 V_{k-1}(2), which solves to V_k(0) = 1 - (1 + k/2) (2/3)^k:
    #   V_1 = 0, V_2 = 1/9, V_3 = (2 * 1/9 + 5/9) / 3 = 7/27, V_4 = (2 * 7/27 + 19/27) / 3 = 11/27.
    lake = FrozenLakeEnv(desc=["SH", "FG"], is_slippery=True)
    q = frozen_lake_q_values(lake, 30)
    v = q.max(-1)
    for k, exact in [(0, 0.0), (1, 0.0), (2, 1 / 9), (3, 7 / 27), (4, 11 / 27)]:
        assert v[k, 0] == pytest.approx(exact, abs=1e-12)
    for k in range(31):
        assert v[k, 0] == pytest.approx(1 - (1 + k / 2) * (2 / 3) ** k, abs=1e-12)
        assert v[k, 2] == pytest.approx(1 - (2 / 3) ** k, abs=1e-12)
    for k in range(2, 31):  # (k = 2: left and down tie at 1/9; the lowest index, left, wins)
        assert best_action(q[:, 0], k) == LEFT
    # down from S with 3 steps: 1/3 V_2(2) + 1/3 V_2(0) + 1/3 hole = (5/9 + 1/9) / 3 = 6/27 < 7/27
    assert q[3, 0, DOWN] == pytest.approx(6 / 27, abs=1e-12)
    assert v[:, 1].max() == 0.0  # the hole is terminal with nothing to gain


NONSLIP_3X3 = ["SFF", "HHF", "FFG"]  # the only path: right, right, down, down (4 steps)


def test_nonslippery_budget_decides_between_certainty_and_nothing():
    v = values(NONSLIP_3X3, slippery=False, horizon=6)
    assert v[:, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert optimal_success_probability(hand_env(NONSLIP_3X3, False, max_steps=4)) == 1.0
    assert optimal_success_probability(hand_env(NONSLIP_3X3, False, max_steps=3)) == 0.0


@pytest.mark.parametrize("max_steps", [4, 8])
def test_optimal_policy_walks_the_shortest_path(max_steps):
    # With spare steps every action that keeps the goal reachable ties at 1.0; the tie-break prefers the
    # action that is still optimal with fewer steps left, so the player never dawdles.
    env, policy = hand_env(NONSLIP_3X3, False, max_steps), FrozenLakeOptimal()
    policy.reset(FrozenLake(size=3), env)
    actions, terminated, reward = [], False, 0.0
    while not terminated:
        actions.append(policy.act(FrozenLake(size=3), env))
        _, reward, terminated, truncated, _ = env.step(actions[-1])
        assert not truncated
    assert actions == [RIGHT, RIGHT, DOWN, DOWN] and reward == 1.0


def test_value_follows_the_remaining_budget():
    env = hand_env(NONSLIP_3X3, False, max_steps=5)
    env.step(LEFT)  # bump into the wall: 4 steps left, still exactly enough
    assert optimal_success_probability(env) == 1.0
    env.step(LEFT)  # 3 steps left: no longer reachable
    assert optimal_success_probability(env) == 0.0


def test_classic_slippery_map_long_horizon_matches_known_optimum():
    # The undiscounted optimum of gymnasium's classic slippery 4x4 map is about 0.82 (14/17).
    env = FrozenLake(map_name="4x4", slippery=True, max_steps=3000).make_env()
    env.reset(seed=0)
    assert optimal_success_probability(env) == pytest.approx(14 / 17, abs=1e-9)


def test_optimal_play_matches_its_exact_value_on_average():
    game = FrozenLake(map_name="4x4", slippery=True, max_steps=15)  # one fixed map: one exact value
    env = game.make_env()
    game.reset(env, 0)
    p = optimal_success_probability(env)
    assert 0.05 < p < 0.5
    n = 300
    rate = summarize(play_reference(FrozenLakeOptimal(), game, range(n)))["success_rate"]
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_best_action_tie_breaking():
    assert best_action(np.array([0.5, 0.5, 0.2, 0.5])) == 0
    assert best_action(np.array([0.1, 0.5, 0.2, 0.5 + 1e-15])) == 1
    table = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [1.0, 1.0, 1.0, 0.2]])
    assert best_action(table) == 2  # ties at budget 2, decided by budget 1 (2 beats 0 and 1)
    assert best_action(table, 1) == 2
    with pytest.raises(ValueError):
        best_action(table, 3)


def test_optimal_caches_one_table_per_map(monkeypatch):
    calls = []
    real = frozen_lake.frozen_lake_q_values
    monkeypatch.setattr(frozen_lake, "frozen_lake_q_values", lambda lake, h: calls.append(h) or real(lake, h))
    episodes = play_reference(FrozenLakeOptimal(), FrozenLake(), range(5))
    assert len(calls) == 5 and sum(e.length for e in episodes) > 5


# ----- the panels ------------------------------------------------------------------------------------------
def test_optimal_solves_every_nonslippery_panel_map():
    (scenario,) = build_panel(FrozenLake(), ["nonslip-4x4"], episodes=50)
    stats = summarize(play_reference(FrozenLakeOptimal(), scenario))
    assert stats["success_rate"] == 1.0 and stats["return_mean"] == 1.0


def test_optimal_never_below_random_on_the_panel():
    for scenario in build_panel(FrozenLake(), episodes=20):
        optimal = summarize(play_reference(FrozenLakeOptimal(), scenario))
        random = summarize(play_reference(RandomPolicy(), scenario))
        assert optimal["success_rate"] >= random["success_rate"], scenario.name
        assert optimal["return_mean"] >= random["return_mean"], scenario.name


def test_snake_greedy_beats_random():
    (scenario,) = build_panel(Snake(), ["default-8"], episodes=50)
    greedy = summarize(play_reference(SnakeGreedy(), scenario))
    random = summarize(play_reference(RandomPolicy(), scenario))
    assert greedy["return_mean"] > random["return_mean"] + 1.0
    assert greedy["success_rate"] > random["success_rate"]


# ----- random policy and play_reference --------------------------------------------------------------------
def test_random_policy_is_deterministic_per_episode():
    game = Snake()
    first = play_reference(RandomPolicy(), game, [3, 4, 5])
    again = play_reference(RandomPolicy(), game, [5])
    assert [s.action for s in first[2].steps] == [s.action for s in again[0].steps]
    assert [[s.action for s in e.steps] for e in first] == [
        [s.action for s in e.steps] for e in play_reference(RandomPolicy(), game, [3, 4, 5])
    ]
    other = play_reference(RandomPolicy(seed=1), game, [3, 4, 5])
    assert [[s.action for s in e.steps] for e in first] != [[s.action for s in e.steps] for e in other]
    actions = {s.action for e in play_reference(RandomPolicy(), FrozenLake(), range(20)) for s in e.steps}
    assert actions == {0, 1, 2, 3}


def test_play_reference_episodes_are_scored_like_lm_episodes():
    scenario = build_panel(FrozenLake(), ["slippery-4x4"], episodes=6)[0]
    episodes = play_reference(FrozenLakeOptimal(), scenario, render=True)
    assert [e.seed for e in episodes] == scenario.seeds and [e.group_id for e in episodes] == list(range(6))
    for e in episodes:
        assert e.done and e.error is None and e.invalid_steps == 0
        assert e.success == (e.terminated and e.total_reward > 0)
        assert e.truncated == (not e.terminated and e.length == 30)
        for step in e.steps:
            assert step.valid and step.text == "" and "Grid:" in step.observation
            assert step.prompt_ids.numel() == step.completion_ids.numel() == step.logprobs.numel() == 0
            assert step.prompt_ids.dtype == torch.long and step.logprobs.dtype == torch.float32
    # an explicit seed list overrides the scenario's
    assert [e.seed for e in play_reference(RandomPolicy(), scenario, [7, 8])] == [7, 8]


def test_play_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="seeds"):
        play_reference(RandomPolicy(), FrozenLake())

    class Bad(ReferencePolicy):
        def act(self, game, env):
            return 4

    with pytest.raises(ValueError, match="action 4"):
        play_reference(Bad(), FrozenLake(), [0])
    with pytest.raises(TypeError, match="RandomMapFrozenLake"):
        play_reference(FrozenLakeOptimal(), Snake(), [0])


def test_every_frozen_lake_scenario_is_winnable_by_the_optimal_policy():
    # a scenario in which even the optimum fails measures nothing: each horizon lets it succeed mostly
    from msgrpo.evaluation import build_panel, summarize

    game = FrozenLake()
    for scenario in build_panel(game, list(game.scenarios()), episodes=50):
        if scenario.name == "train":
            continue
        rate = summarize(play_reference(FrozenLakeOptimal(), scenario))["success_rate"]
        assert rate >= 0.8, (scenario.name, rate)


def test_the_old_module_path_still_works_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("msgrpo.reference", None)
    with pytest.warns(FutureWarning, match="msgrpo.reference is deprecated"):
        old = importlib.import_module("msgrpo.reference")
    assert old.RandomPolicy is RandomPolicy and old.FrozenLakeOptimal is FrozenLakeOptimal
    assert old.SnakeGreedy is SnakeGreedy and old.play_reference is play_reference
