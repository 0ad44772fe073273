"""Reference players: scripted agents that play a :class:`~msgrpo.game.TextGame` without a language model.

They give the floor (:class:`~msgrpo.game.RandomPolicy`, beside :class:`~msgrpo.game.TextGame` with the base
:class:`~msgrpo.game.ReferencePolicy`) and the ceiling (each
game's own: Frozen Lake's exact optimum, :class:`~msgrpo.components.games.frozen_lake.FrozenLakeOptimal`;
Snake's scripted player, :class:`~msgrpo.components.games.snake.SnakeGreedy`) that an LM agent's evaluation
figures are read against. :func:`play_reference` plays them through the same env, reward and success code
the LM rollout uses (:func:`msgrpo.rollout.play`), so the numbers are directly comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from msgrpo.game import RandomPolicy, ReferencePolicy
from msgrpo.types import Episode, Step

__all__ = ["RandomPolicy", "ReferencePolicy", "play_reference"]


# ----- playing ---------------------------------------------------------------------------------------------
def _empty_long() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long)


def play_reference(
    policy: ReferencePolicy,
    scenario_or_game: Any,
    seeds: Sequence[int] | None = None,
    render: bool = False,
) -> list[Episode]:
    """Play one episode per seed with a scripted policy, scored exactly as the LM rollout scores episodes.

    Every episode gets a fresh env, ``game.reset(env, seed)``, then ``policy.reset`` and repeated
    ``env.step(policy.act(...))`` until terminated or truncated; the episode's success is
    ``game.is_success`` of the last step, as in :func:`msgrpo.rollout.play`. Steps are always valid (no
    format penalty) and carry empty token tensors.

    Args:
        policy: The reference policy.
        scenario_or_game: A :class:`~msgrpo.evaluation.Scenario` (its game and, by default, its seeds) or a
            game.
        seeds: Reset seeds, one episode each (required for a bare game).
        render: Store ``game.render(env)`` as each step's observation (default: empty, faster).

    Returns:
        Episodes in seed order; ``group_id`` is the index of the seed.
    """
    if hasattr(scenario_or_game, "seeds") and hasattr(scenario_or_game, "game"):  # a Scenario
        game = scenario_or_game.game
        seeds = scenario_or_game.seeds if seeds is None else seeds
    else:
        game = scenario_or_game
        if seeds is None:
            raise ValueError("play_reference() needs seeds when given a game rather than a Scenario")
    num_actions = len(game.action_names)
    episodes = []
    for index, seed in enumerate(seeds):
        env = game.make_env()
        game.reset(env, int(seed))
        policy.reset(game, env)
        episode = Episode(group_id=index, seed=int(seed))
        while not episode.done:
            observation = game.render(env) if render else ""
            action = int(policy.act(game, env))
            if not 0 <= action < num_actions:
                raise ValueError(
                    f"{type(policy).__name__} returned action {action}; {type(game).__name__} has {num_actions} actions"
                )
            _, reward, terminated, truncated, info = env.step(action)
            reward = float(reward)
            episode.steps.append(
                Step(
                    observation=observation,
                    prompt_ids=_empty_long(),
                    completion_ids=_empty_long(),
                    logprobs=torch.zeros(0, dtype=torch.float32),
                    text="",
                    action=action,
                    valid=True,
                    reward=reward,
                )
            )
            episode.terminated, episode.truncated = bool(terminated), bool(truncated)
            if episode.done:
                episode.success = game.is_success(reward, episode.terminated, episode.truncated, dict(info))
        env.close()
        episodes.append(episode)
    return episodes
