"""Reference policies: scripted agents that play a :class:`~msgrpo.game.TextGame` without a language model.

They give the floor (:class:`RandomPolicy`) and the ceiling (:class:`FrozenLakeOptimal`, the exact optimum of
Frozen Lake's MDP; :class:`SnakeGreedy`, a strong scripted Snake player) that an LM agent's evaluation
figures are read against. :func:`play_reference` plays them through the same env, reward and success code
the LM rollout uses (:func:`msgrpo.rollout.play`), so the numbers are directly comparable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from msgrpo.evaluation import Scenario
from msgrpo.game import TextGame
from msgrpo.types import Episode, Step

_TIE_TOL = 1e-12


class ReferencePolicy(ABC):
    """A scripted policy: picks a domain action from the env's state (no text involved)."""

    #: Short name used by the baselines CLI and in logs.
    name: str = "reference"

    def reset(self, game: TextGame, env: gym.Env) -> None:  # noqa: B027 - optional hook
        """Called once per episode, right after ``game.reset(env, seed)``. Default: nothing."""

    @abstractmethod
    def act(self, game: TextGame, env: gym.Env) -> int:
        """The action index (into ``game.action_names``) to play in the env's current state."""


class RandomPolicy(ReferencePolicy):
    """Uniformly random actions, reproducible per episode.

    The RNG is reseeded at every :meth:`reset` from ``(seed, env reset seed)``, so an episode's actions
    depend only on its reset seed (and ``seed``), not on which episodes were played before it. The env's own
    RNG is never touched.

    Args:
        seed: Extra seed mixed into every episode's RNG (different values give different random players).
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def reset(self, game: TextGame, env: gym.Env) -> None:
        env_seed = int(getattr(env.unwrapped, "np_random_seed", -1))
        self._rng = np.random.default_rng([self.seed % 2**63, env_seed % 2**63])

    def act(self, game: TextGame, env: gym.Env) -> int:
        return int(self._rng.integers(len(game.action_names)))


# ----- Frozen Lake: finite-horizon value iteration ---------------------------------------------------------
def frozen_lake_q_values(lake: Any, horizon: int) -> np.ndarray:
    """Goal-reaching probabilities of a Frozen Lake MDP by finite-horizon value iteration.

    Uses the exact transition table ``lake.P`` (gymnasium's ``FrozenLakeEnv``; slippery moves included):
    ``P[s][a]`` is a list of ``(prob, next_state, reward, terminated)``. The value counted is the
    probability of entering a goal cell (``b"G"`` in ``lake.desc``), whatever the env's reward schedule.

    Args:
        lake: A gymnasium ``FrozenLakeEnv`` (anything with ``P`` and ``desc``).
        horizon: The largest step budget to solve for (>= 0).

    Returns:
        ``Q`` of shape ``[horizon + 1, S, A]``: ``Q[k, s, a]`` is the probability of reaching the goal within
        ``k`` steps when playing ``a`` in state ``s`` and optimally afterwards (``Q[0] = 0``). Terminal states
        (holes, goal) have value 0: the episode is over. ``V_k = Q[k].max(-1)``.
    """
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    cells = np.asarray(lake.desc).reshape(-1)
    goal = (cells == b"G").astype(np.float64)
    absorbing = (cells == b"G") | (cells == b"H")  # the episode has already ended in these states
    num_states = cells.size
    num_actions = len(lake.P[0])
    # trans[s, a, s']: probability of moving to a non-terminal s'; hit[s, a]: probability of entering a goal.
    trans = np.zeros((num_states, num_actions, num_states))
    hit = np.zeros((num_states, num_actions))
    for s in np.flatnonzero(~absorbing):
        for a in range(num_actions):
            for prob, nxt, _reward, terminated in lake.P[s][a]:
                if terminated:
                    hit[s, a] += prob * goal[nxt]
                else:
                    trans[s, a, nxt] += prob
    q = np.zeros((horizon + 1, num_states, num_actions))
    value = np.zeros(num_states)
    for k in range(1, horizon + 1):
        q[k] = hit + trans @ value
        value = q[k].max(axis=-1)
    return q


def best_action(q: np.ndarray, budget: int | None = None) -> int:
    """Argmax with deterministic tie-breaking.

    Args:
        q: Either one row ``[A]`` of action values, or a state's values at every budget ``[K, A]``
            (``q[k]`` = values with ``k`` steps left, as :func:`frozen_lake_q_values` gives for one state).
        budget: With a ``[K, A]`` table, the steps left (default ``K - 1``).

    Returns:
        The action maximising ``q[budget]``; ties (within 1e-12) go to the action that is best with one step
        less, then two steps less... (so with a generous budget the goal is reached as early as possible),
        then to the lowest action index.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        q = q[None]
    budget = q.shape[0] - 1 if budget is None else int(budget)
    candidates = np.arange(q.shape[1])
    if not 0 <= budget < q.shape[0]:
        raise ValueError(f"budget {budget} outside the table's 0..{q.shape[0] - 1}")
    candidates = np.arange(q.shape[1])
    for k in range(budget, -1, -1):
        row = q[k, candidates]
        candidates = candidates[row >= row.max() - _TIE_TOL]
        if len(candidates) == 1:
            break
    return int(candidates[0])


def _frozen_lake_env(env: gym.Env) -> Any:
    base = env.unwrapped
    if getattr(base, "lake", None) is None or not hasattr(base, "max_steps"):
        raise TypeError(
            f"expected a reset RandomMapFrozenLake env (with .lake and .max_steps), got {type(base).__name__}"
        )
    return base


def optimal_success_probability(env: gym.Env) -> float:
    """The exact optimal probability of reaching the goal from the env's current state and step budget.

    Called right after ``reset`` this is the episode's optimal success probability from its start state
    (the value at step 0 with the full budget ``max_steps``).

    Args:
        env: A reset :class:`~msgrpo.components.games.frozen_lake.RandomMapFrozenLake`.
    """
    base = _frozen_lake_env(env)
    left = max(int(base.max_steps) - int(base.steps), 0)
    q = frozen_lake_q_values(base.lake, left)
    return float(q[left, int(base.lake.s)].max())


class FrozenLakeOptimal(ReferencePolicy):
    """The optimal Frozen Lake policy for the current map and the remaining step budget.

    Solves the map's MDP (exact ``lake.P`` table, slippery included) by finite-horizon value iteration once
    per map, then plays ``argmax_a Q[max_steps - steps, s, a]``; ties go to the action that reaches the goal
    sooner (best with fewer steps left), then to the lowest action index (see :func:`best_action`). Its
    expected success rate is :func:`optimal_success_probability` at the start: no policy does better.
    """

    name = "optimal"

    def __init__(self) -> None:
        self._lake: Any = None  # the map the cached table belongs to (kept alive so identity is safe)
        self._q: np.ndarray | None = None

    def _table(self, env: gym.Env) -> tuple[Any, np.ndarray]:
        base = _frozen_lake_env(env)
        if self._q is None or self._lake is not base.lake or self._q.shape[0] <= base.max_steps:
            self._lake = base.lake
            self._q = frozen_lake_q_values(base.lake, int(base.max_steps))
        return base, self._q

    def reset(self, game: TextGame, env: gym.Env) -> None:
        self._table(env)

    def act(self, game: TextGame, env: gym.Env) -> int:
        base, q = self._table(env)
        left = min(max(int(base.max_steps) - int(base.steps), 0), q.shape[0] - 1)
        return best_action(q[:, int(base.lake.s)], left)


class SnakeGreedy(ReferencePolicy):
    """Snake's scripted greedy player for the learner (safe first step towards the nearest apple)."""

    name = "greedy"

    def act(self, game: TextGame, env: gym.Env) -> int:
        from msgrpo.components.games.snake import greedy_action

        return int(greedy_action(env, 0))


# ----- playing ---------------------------------------------------------------------------------------------
def _empty_long() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.long)


def play_reference(
    policy: ReferencePolicy,
    scenario_or_game: Scenario | TextGame,
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
    if isinstance(scenario_or_game, Scenario):
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
