"""Snake: rules on hand-made states, seeding, gymnasium checks and the text interface."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from msgrpo.components.games import Snake, SnakeEnv, greedy_action, safe_moves
from msgrpo.errors import ConfigError

UP, DOWN, LEFT, RIGHT = range(4)


def make(state=None, **settings):
    """A reset env, optionally with a hand-made state ``(snakes, apples[, poison[, alive]])``."""
    env = SnakeEnv(**settings)
    env.reset(seed=0)
    if state is not None:
        env.set_state(*state)
    return env


def test_wall_death_ends_with_minus_one_minus_penalty():
    env = make(([[(0, 0)]], [(4, 4)]), width=5, height=5, num_opponents=0, death_penalty=0.5)
    _, reward, terminated, truncated, info = env.step(LEFT)
    assert reward == pytest.approx(-1.5)
    assert terminated and not truncated
    assert info["alive"] is False and info["won"] is False


def test_self_collision_kills_but_a_vacated_tail_is_free():
    spiral = [(1, 1), (2, 1), (2, 2), (1, 2), (0, 2)]  # up from (1, 1) enters (1, 2), not the tail
    env = make(([spiral], []), width=5, height=5, num_opponents=0)
    _, reward, terminated, _, _ = env.step(UP)
    assert terminated and reward == -1.0
    square = [(1, 1), (2, 1), (2, 2), (1, 2)]  # up enters the tail, which moves away this round
    env = make(([square], []), width=5, height=5, num_opponents=0)
    _, reward, terminated, _, _ = env.step(UP)
    assert not terminated and reward == 0.0
    assert env.snakes[0] == [(1, 2), (1, 1), (2, 1), (2, 2)]


def test_collision_with_another_body_and_with_a_tail_kept_by_eating():
    env = make(([[(1, 1)], [(2, 2), (2, 1), (2, 0)]], []), width=5, height=5)
    env.play_round([RIGHT, UP])  # (2, 1) is still opponent body after its move
    assert env.alive == [False, True]
    for apple, learner_alive in (([(3, 4)], False), ([], True)):
        env = make(([[(2, 2)], [(3, 3), (3, 2)]], apple), width=5, height=5)
        env.play_round([RIGHT, UP])  # the learner enters the opponent's tail, kept only if it eats
        assert env.alive == [learner_alive, True]


def test_head_to_head_and_swap_kill_both():
    env = make(([[(1, 1)], [(3, 1)]], []), width=5, height=5)
    env.play_round([RIGHT, LEFT])
    assert env.alive == [False, False]
    env = make(([[(1, 1)], [(2, 1)]], []), width=5, height=5)
    env.play_round([RIGHT, LEFT])
    assert env.alive == [False, False]
    env = make(([[(1, 1)], [(3, 1)]], [(2, 1)]), width=5, height=5)
    env.play_round([RIGHT, LEFT])  # nobody eats an apple they die on
    assert env.alive == [False, False] and env.apples == [(2, 1)] and env.scores == [0, 0]


def test_apple_grows_and_respawns_on_the_only_free_cell():
    state = ([[(0, 1), (0, 0), (1, 0), (2, 0)]], [(1, 1)])
    env = make(state, width=3, height=2, num_apples=1, num_opponents=0)
    _, reward, terminated, _, info = env.step(RIGHT)
    assert reward == 1.0 and not terminated and info["score"] == 1
    assert env.snakes[0] == [(1, 1), (0, 1), (0, 0), (1, 0), (2, 0)]
    assert env.apples == [(2, 1)]


def test_apple_respawns_on_a_free_cell_for_many_seeds():
    for seed in range(20):
        env = SnakeEnv(width=4, height=4, num_apples=3, num_opponents=1)
        env.reset(seed=seed)
        env.set_state([[(0, 0)], [(3, 3)]], [(0, 1), (2, 2), (1, 3)])
        env.step(UP)
        snake_cells = {c for body in env.snakes for c in body}
        assert len(env.apples) == 3 and len(set(env.apples)) == 3
        assert not snake_cells & set(env.apples) and all(env.inside(c) for c in env.apples)


def test_poison_apple_costs_and_does_not_grow():
    env = make(([[(0, 0)]], [(4, 4)], [(0, 1)]), width=5, height=5, num_opponents=0, poison_apples=1)
    _, reward, terminated, _, info = env.step(UP)
    assert reward == -1.0 and not terminated and info["score"] == -1
    assert env.snakes[0] == [(0, 1)]
    assert env.apples == [(4, 4)] and len(env.poison) == 1 and env.poison[0] not in {(0, 1), (4, 4)}
    obs = env._obs()
    assert obs[env.poison[0][1], env.poison[0][0]] == 2 and obs[1, 0] == 3


def test_opponent_death_ends_the_game_and_the_learner_wins():
    trapped = [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0)]  # every move of the opponent is fatal
    game = Snake(width=5, height=5)
    env = game.make_env()
    env.reset(seed=3)
    env.set_state([[(4, 4)], trapped], [])
    _, reward, terminated, truncated, info = env.step(LEFT)
    assert terminated and not truncated and reward == 0.0
    assert info["won"] and info["alive"] and info["alive_snakes"] == [True, False]
    assert game.is_success(reward, terminated, truncated, info)


def test_round_limit_truncates():
    env = make(([[(2, 2)]], []), width=5, height=5, num_opponents=0, max_rounds=3)
    outs = [env.step(a)[2:4] for a in (UP, DOWN, UP)]
    assert outs == [(False, False), (False, False), (False, True)]
    env.set_state([[(2, 2)]], [], rounds_played=2)
    assert env.step(UP)[3]
    assert Snake().is_success(0.0, False, True, {"alive": True})
    assert not Snake().is_success(-1.0, True, False, {"alive": False})


def test_reward_sums_with_step_reward_and_death_penalty():
    shaping = dict(apple_reward=2.0, death_penalty=0.5, step_reward=0.1)
    env = make(([[(0, 0)]], [(0, 2)]), width=2, height=6, num_apples=1, num_opponents=0, **shaping)
    rewards = [env.step(a)[1] for a in (UP, UP, LEFT)]  # move, eat, wall
    assert rewards == pytest.approx([0.1, 2.1, -1.5])
    assert sum(rewards) == pytest.approx(0.7)


def rollout(seed, actions, **settings):
    env = SnakeEnv(**settings)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        trace += [obs, reward]
        if terminated or truncated:
            break
    return trace


def test_same_seed_replays_and_different_seeds_differ():
    actions = [UP, RIGHT, DOWN, LEFT, UP, UP, RIGHT, DOWN]
    for settings in ({}, {"num_opponents": 2, "poison_apples": 2}, {"opponent": "greedy"}):
        a, b = rollout(7, actions, **settings), rollout(7, actions, **settings)
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    starts = {rollout(seed, [])[0].tobytes() for seed in range(5)}
    assert len(starts) == 5


def test_random_opponent_takes_its_only_safe_move():
    for seed in range(10):
        env = SnakeEnv(width=5, height=5)
        env.reset(seed=seed)
        env.set_state([[(4, 4)], [(0, 0), (1, 0), (1, 1)]], [])
        assert safe_moves(env, 1) == [UP]
        env.step(DOWN)
        assert env.snakes[1][0] == (0, 1)


def test_greedy_action_goes_for_apples_and_avoids_poison():
    env = make(([[(2, 2)]], [(2, 4)]), width=5, height=5, num_opponents=0)
    assert greedy_action(env) == UP
    env.set_state([[(2, 2)]], [(0, 2)])
    assert greedy_action(env) == LEFT
    env = make(([[(2, 2)]], [(2, 4)], [(2, 3)]), width=5, height=5, num_opponents=0, poison_apples=1)
    assert greedy_action(env) == LEFT  # around the poison; left and right tie, lower index wins


def test_check_env_and_gym_make():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(SnakeEnv().unwrapped)
        check_env(SnakeEnv(num_opponents=2, poison_apples=2, opponent="greedy").unwrapped)
        env = gym.make("msgrpo/Snake-v0", max_rounds=3)
        obs, info = env.reset(seed=0)
        assert obs.shape == (10, 10) and info["alive"]
        env.step(0)


RENDERED = """Board: 5x5. Coordinates are (x, y): (0, 0) is the bottom-left cell, x grows to the right and y grows upward (up is y+1).
Round: 3 of 8
Apples: (4, 4), (0, 2)
Poison apples: (4, 0)
Your snake (score 0): head (1, 1), body (1, 0), (2, 0)
Opponent 1 (score 0): head (3, 3), body (3, 2)
Opponent 2 (dead, score 0): head (0, 4), body none
Legend: Y = your head, y = your body, 1 = head of opponent 1, 2 = head of opponent 2, o = opponent body, A = apple, X = poison apple, . = empty cell.
Grid (top row is y = 4):
. . . . A
. . . 1 .
A . . o .
. Y . . .
. y y . X
Your head is at (1, 1)."""  # noqa: E501


def test_render_hand_made_state_exactly():
    game = Snake(width=5, height=5, num_apples=3, num_opponents=2, poison_apples=1)
    env = game.make_env()
    game.reset(env, 0)
    env.unwrapped.set_state(
        [[(1, 1), (1, 0), (2, 0)], [(3, 3), (3, 2)], [(0, 4)]],
        [(4, 4), (0, 2)],
        [(4, 0)],
        alive=[True, True, False],
        rounds_played=2,
    )
    assert game.render(env) == RENDERED
    rules = game.rules()
    assert "(0, 0) is the bottom-left cell" in rules and "up, down, left, right" in rules
    assert "8 rounds" in rules and "poison" in rules


def test_surroundings_name_the_four_neighbours_by_hand():
    game = Snake(width=5, height=5, num_apples=3, num_opponents=2, poison_apples=1, surroundings=True)
    env = game.make_env()
    game.reset(env, 0)
    # head (1, 1): up (1, 2) apple, down (1, 0) own body, left (0, 1) opponent 2's head, right (2, 1) poison
    env.unwrapped.set_state([[(1, 1), (1, 0)], [(3, 3), (3, 2)], [(0, 1)]], [(1, 2), (4, 4)], [(2, 1)])
    lines = game.render(env).splitlines()
    assert lines[-2] == "Your head is at (1, 1)."
    assert lines[-1] == "Next to your head: up apple, down your body, left opponent head, right poison."
    # head (0, 4) in the top-left corner: two walls, an opponent's body below, a free cell to the right
    env.unwrapped.set_state([[(0, 4)], [(1, 3), (0, 3)], [(3, 0)]], [(2, 2), (4, 4)], [(2, 0)])
    assert game.render(env).splitlines()[-1] == "Next to your head: up wall, down opponent body, left wall, right free."
    # off by default, kept by every scenario of the panel, and only the text changes
    assert all(g.settings["surroundings"] for g in game.scenarios().values())
    plain = Snake(width=5, height=5, num_apples=3, num_opponents=2, poison_apples=1)
    a, b = plain.make_env(), game.make_env()
    assert (a.reset(seed=4)[0] == b.reset(seed=4)[0]).all()
    assert "Next to your head" not in plain.render(a)
    assert game.render(b) == plain.render(a) + "\n" + game.render(b).splitlines()[-1]
    steps = 0
    for action in (DOWN, DOWN, LEFT, UP, UP, UP, UP):  # five rounds alive, then up into the top wall
        oa, ra, ta, *_ = a.step(action)
        ob, rb, tb, *_ = b.step(action)
        assert (oa == ob).all() and (ra, ta) == (rb, tb)
        text, extra = plain.render(a), game.render(b)
        if b.unwrapped.alive[0]:  # the neighbour line follows the same text after every round
            assert extra.startswith(text + "\nNext to your head: ") and extra.count("\n") == text.count("\n") + 1
        else:  # a dead snake has no head to describe
            assert extra == text
        steps += 1
        if ta:
            break
    assert (steps, ra, b.unwrapped.alive[0]) == (6, -1.0, False)


def test_parse_and_invalid_text_fallback_with_penalty():
    game = Snake(num_opponents=0, format_penalty=0.1)
    assert game.parse("<action>UP</action>") == UP
    assert game.parse("<think>left?</think><action> right </action>") == RIGHT
    env = game.make_env()
    game.reset(env, 0)
    env.set_state([[(5, 5)]], [])
    r = game.act(env, "<action>north</action>")
    assert (r.action, r.valid) == (UP, False)
    assert r.reward == pytest.approx(-0.1)
    r = game.act(env, "<action>down</action>")
    assert (r.action, r.valid, r.reward) == (DOWN, True, 0.0)


def test_scenarios_and_validation_errors():
    panel = Snake(death_penalty=0.5).scenarios()
    assert set(panel) == {"train", "default-8", "long-20", "poison", "two-opponents"}
    assert panel["long-20"].settings["max_rounds"] == 20
    assert panel["poison"].settings["poison_apples"] == 2 and panel["poison"].settings["num_apples"] == 5
    assert panel["two-opponents"].settings["num_opponents"] == 2
    assert panel["default-8"].settings["death_penalty"] == 0.5
    with pytest.raises(ValueError, match="poison_apples"):
        Snake(poison_apples=6)
    with pytest.raises(ValueError, match="'smart'"):
        Snake(opponent="smart")
    with pytest.raises(ValueError, match="no no-op"):
        Snake(fallback="noop")
    with pytest.raises(ValueError, match="max_rounds"):
        Snake(max_rounds=0)
    env = make()
    with pytest.raises(ValueError, match="off the"):
        env.set_state([[(10, 0)], [(0, 0)]], [])
    with pytest.raises(ValueError, match="contiguous"):
        env.set_state([[(1, 1), (3, 1)], [(0, 0)]], [])
    with pytest.raises(ValueError, match="overlap"):
        env.set_state([[(1, 1)], [(0, 0)]], [(1, 1)])


def test_compact_observation_by_hand():
    game = Snake(width=5, height=5, num_apples=3, num_opponents=2, poison_apples=1, observation="compact")
    env = game.make_env()
    game.reset(env, 0)
    # as above: head (1, 1), its body below; opponent 1 head (3, 3); opponent 2 head (0, 1); poison at (2, 1)
    env.unwrapped.set_state([[(1, 1), (1, 0)], [(3, 3), (3, 2)], [(0, 1)]], [(1, 2), (4, 4)], [(2, 1)], rounds_played=2)
    assert game.render(env) == (
        "Round 3 of 8. Apples: (1, 2), (4, 4). Poison apples: (2, 1). Opponent 1 head: (3, 3). "
        "Opponent 2 head: (0, 1).\n"
        "You (score 0, length 2): head (1, 1). "
        "Next to your head: up apple, down your body, left opponent head, right poison."
    )
    snakes = [[(0, 4)], [(1, 3), (0, 3)], [(3, 0)]]
    env.unwrapped.set_state(snakes, [(2, 2), (4, 4)], [(2, 0)], alive=[False, True, False])
    assert game.render(env) == (
        "Round 1 of 8. Apples: (2, 2), (4, 4). Poison apples: (2, 0). Opponent 1 head: (1, 3). Opponent 2: dead.\n"
        "You are dead (score 0)."
    )
    # text only: the same states, rewards and ends as the full observation; far fewer tokens
    full = Snake(width=5, height=5, num_apples=3, num_opponents=2, poison_apples=1)
    a, b = full.make_env(), game.make_env()
    assert (a.reset(seed=4)[0] == b.reset(seed=4)[0]).all()
    for action in (DOWN, DOWN, LEFT, UP):
        oa, ra, ta, *_ = a.step(action)
        ob, rb, tb, *_ = b.step(action)
        assert (oa == ob).all() and (ra, ta) == (rb, tb)
    assert all(g.settings["observation"] == "compact" for g in game.scenarios().values())
    assert len(game.render(b)) * 2 < len(full.render(a))  # (5x5; on the 10x10 board about a fifth of the tokens)
    with pytest.raises(ConfigError, match="observation must be 'full' or 'compact'"):
        Snake(observation="short").make_env()
