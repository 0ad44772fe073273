"""Frozen Lake text game."""

import pytest

from msgrpo.components.games import FrozenLake

CLASSIC_START = (
    "Board: 4x4. Positions are (row, column); (0, 0) is the top-left cell, rows grow downward and columns "
    "grow to the right.\n"
    """Player: (0, 0)
Goal: (3, 3)
Holes: (1, 1), (1, 3), (2, 3), (3, 0)
Legend: P = player, F = frozen ice, H = hole, G = goal.
Grid:
P F F F
F H F H
F F F H
H F F G"""
)


def test_render_classic_map_exactly():
    game = FrozenLake(map_name="4x4")
    env = game.make_env()
    game.reset(env, 0)
    assert game.render(env) == CLASSIC_START


def test_moves_goal_and_success():
    game = FrozenLake(map_name="4x4", max_steps=20)
    env = game.make_env()
    game.reset(env, 0)
    path = ["right", "right", "down", "down", "down", "right"]
    results = [game.act(env, f"<action>{a}</action>") for a in path]
    assert [r.terminated for r in results] == [False] * 5 + [True]
    assert results[-1].reward == 1.0
    assert game.is_success(results[-1].reward, True, False, results[-1].info)
    assert "Player: (3, 3)" in game.render(env)


def test_hole_ends_with_zero_and_step_limit_truncates():
    game = FrozenLake(map_name="4x4", max_steps=3)
    env = game.make_env()
    game.reset(env, 0)
    r = game.act(env, "<action>down</action>")
    r = game.act(env, "<action>right</action>")  # (1, 1) is a hole
    assert r.terminated and r.reward == 0.0
    assert not game.is_success(r.reward, r.terminated, r.truncated, r.info)
    game.reset(env, 0)
    outs = [game.act(env, "<action>left</action>") for _ in range(3)]
    assert [o.truncated for o in outs] == [False, False, True]


def test_random_maps_follow_the_seed():
    game = FrozenLake()
    env = game.make_env()
    renders = {}
    for seed in (1, 2, 1):
        game.reset(env, seed)
        renders.setdefault(seed, set()).add(game.render(env))
    assert len(renders[1]) == 1  # same seed, same map
    assert renders[1] != renders[2]


def test_invalid_text_executes_fallback_with_penalty():
    game = FrozenLake(map_name="4x4", format_penalty=0.1)
    env = game.make_env()
    game.reset(env, 0)
    r = game.act(env, "<action>north</action>")
    assert (r.action, r.valid) == (0, False)
    assert r.reward == pytest.approx(-0.1)


def test_slippery_scenarios_and_errors():
    panel = FrozenLake().scenarios()
    assert {"train", "nonslip-4x4", "slippery-4x4", "slippery-8x8"} <= set(panel)
    assert panel["slippery-4x4"].settings["slippery"] and panel["slippery-4x4"].settings["max_steps"] == 30
    with pytest.raises(ValueError, match="map_name"):
        FrozenLake(map_name="5x5")
    with pytest.raises(ValueError, match="max_steps"):
        FrozenLake(max_steps=0)
