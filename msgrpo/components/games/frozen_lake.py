"""Frozen Lake as a text-mediated game, on gymnasium's ``FrozenLake-v1`` dynamics.

A fresh map is generated from every reset seed (``generate_random_map``), unless a fixed ``map_name``
(gymnasium's classic ``"4x4"`` or ``"8x8"``) is given.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.toy_text.frozen_lake import MAPS, FrozenLakeEnv, generate_random_map

from msgrpo.errors import require
from msgrpo.game import ReferencePolicy, TextGame, grid_to_text

ACTIONS = ["left", "down", "right", "up"]
RULES = (
    "You are playing Frozen Lake. Walk the player P to the goal G without stepping into a hole H. "
    "Actions: left, down, right, up. Each action moves one cell; moving into the edge of the board "
    "leaves you in place.{slip} Reaching the goal gives reward 1; falling into a hole ends the game "
    "with reward 0. You have at most {max_steps} moves."
)
SLIPPERY_RULE = (
    " The ice is slippery: a move goes in the intended direction only one time in three, "
    "otherwise to one of the two perpendicular directions."
)


class RandomMapFrozenLake(gym.Env):
    """``FrozenLake-v1`` with a new map drawn from each reset seed and a step limit.

    Args:
        size: Board side length.
        frozen_prob: Probability that a generated cell is frozen (safe).
        slippery: gymnasium's ``is_slippery`` (intended move with p=1/3, each perpendicular 1/3).
        max_steps: Step limit; reaching it truncates the episode.
        map_name: A fixed gymnasium map (``"4x4"``/``"8x8"``) instead of random maps.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        size: int = 4,
        frozen_prob: float = 0.8,
        slippery: bool = False,
        max_steps: int = 8,
        map_name: str | None = None,
    ) -> None:
        require(map_name is None or map_name in MAPS, "map_name", f"one of {sorted(MAPS)} or null", map_name)
        require(isinstance(size, int) and size >= 2, "size", "an integer >= 2", size)
        require(0.0 < frozen_prob <= 1.0, "frozen_prob", "in (0, 1]", frozen_prob)
        require(isinstance(max_steps, int) and max_steps >= 1, "max_steps", "an integer >= 1", max_steps)
        self.size = len(MAPS[map_name]) if map_name else size
        self.frozen_prob = frozen_prob
        self.slippery = slippery
        self.max_steps = max_steps
        self.map_name = map_name
        self.observation_space = gym.spaces.Discrete(self.size * self.size)
        self.action_space = gym.spaces.Discrete(4)
        self.lake: FrozenLakeEnv | None = None
        self.steps = 0

    @property
    def desc(self) -> np.ndarray:
        """The current map as a ``[size, size]`` array of single-byte cells (``b"S"``, ``b"F"``...)."""
        assert self.lake is not None, "call reset() first"
        return self.lake.desc

    @property
    def position(self) -> tuple[int, int]:
        """The player's (row, column)."""
        assert self.lake is not None, "call reset() first"
        return divmod(int(self.lake.s), self.size)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.map_name is not None:
            desc = MAPS[self.map_name]
        else:
            map_seed = int(self.np_random.integers(2**31 - 1))
            desc = generate_random_map(size=self.size, p=self.frozen_prob, seed=map_seed)
        self.lake = FrozenLakeEnv(desc=desc, is_slippery=self.slippery)
        self.steps = 0
        state, info = self.lake.reset(seed=int(self.np_random.integers(2**31 - 1)))
        return int(state), info

    def step(self, action):
        assert self.lake is not None, "call reset() first"
        state, reward, terminated, _, info = self.lake.step(int(action))
        self.steps += 1
        truncated = not terminated and self.steps >= self.max_steps
        return int(state), float(reward), bool(terminated), bool(truncated), info


class FrozenLake(TextGame):
    """Frozen Lake with a text interface.

    Args:
        **settings: The :class:`RandomMapFrozenLake` settings, by keyword (its signature is the one list
            of them; the CLI shows them as ``--data.game.init_args.size`` and so on): ``size`` (board side
            length), ``frozen_prob`` (probability of a frozen cell in random maps; paper: 0.8
            non-slippery, 0.9 slippery), ``slippery``, ``max_steps`` (step limit per episode) and
            ``map_name`` (a fixed gymnasium map, ``"4x4"`` the classic one, instead of a random map per
            seed).
        format_penalty: Subtracted from the reward of a step whose text names no valid action.
        fallback: Action for such text: ``"first"`` (left) or ``"random"``.
        parser: Action parser (default: the ``<action>`` tag).
        answer_format: The instruction after every observation (``"think"``, ``"action"``, ``"none"`` or
            text; see :class:`~msgrpo.game.TextGame`).
    """

    action_names = ACTIONS
    success_meaning = "reached the goal"

    def build_env(self, **settings: Any) -> RandomMapFrozenLake:
        return RandomMapFrozenLake(**settings)

    def rules(self) -> str:
        slip = SLIPPERY_RULE if self.settings["slippery"] else ""
        return RULES.format(slip=slip, max_steps=self.settings["max_steps"])

    def render(self, env: gym.Env) -> str:
        lake: RandomMapFrozenLake = env.unwrapped  # type: ignore[assignment]
        desc = [[c.decode() for c in row] for row in lake.desc]
        n = lake.size
        row, col = lake.position
        holes = [(r, c) for r in range(n) for c in range(n) if desc[r][c] == "H"]
        goal = next((r, c) for r in range(n) for c in range(n) if desc[r][c] == "G")
        grid = [["F" if cell == "S" else cell for cell in line] for line in desc]
        grid[row][col] = "P"
        hole_text = ", ".join(f"({r}, {c})" for r, c in holes) or "none"
        return (
            f"Board: {n}x{n}. Positions are (row, column); (0, 0) is the top-left cell, rows grow "
            "downward and columns grow to the right.\n"
            f"Player: ({row}, {col})\nGoal: ({goal[0]}, {goal[1]})\nHoles: {hole_text}\n"
            "Legend: P = player, F = frozen ice, H = hole, G = goal.\n"
            f"Grid:\n{grid_to_text(grid)}"
        )

    def reference_policies(self) -> dict:
        """A random player and the optimal one (exact value iteration on the map's MDP)."""
        return {**super().reference_policies(), "optimal": FrozenLakeOptimal()}

    def frame(self, env: gym.Env):
        """The map: ice, holes, the goal and the player."""
        from msgrpo.observe.frames import grid_image

        lake: RandomMapFrozenLake = env.unwrapped  # type: ignore[assignment]
        cells = [[c.decode() for c in row] for row in lake.desc]
        row, col = lake.position
        cells[row][col] = "P"
        colours = {"S": "#dff3ff", "F": "#dff3ff", "H": "#1f3b73", "G": "#f2c230", "P": "#d33c3c"}
        return grid_image(cells, colours, caption=f"step {lake.steps}")

    def default_scenarios(self) -> list[str]:
        """The training setting and the paper's non-slippery random-map panel."""
        return ["train", "nonslip-4x4"]

    def scenarios(self) -> dict[str, TextGame]:
        """``train`` (this game as configured) plus the paper's panels, each with a horizon under which the
        optimal policy succeeds most of the time (50 panel maps: 1.00, 0.86, 0.84, 0.92 for nonslip-4x4,
        slippery-4x4, -6x6, -8x8; the paper's 15 steps gave the slippery maps 0.44, 0.06 and 0.00, so a
        scenario in which even the optimum fails measured nothing)."""
        random_map = dict(map_name=None)
        return {
            "train": self,
            "nonslip-4x4": self.with_settings(size=4, frozen_prob=0.8, slippery=False, max_steps=8, **random_map),
            "slippery-4x4": self.with_settings(size=4, frozen_prob=0.9, slippery=True, max_steps=30, **random_map),
            "slippery-6x6": self.with_settings(size=6, frozen_prob=0.9, slippery=True, max_steps=80, **random_map),
            "slippery-8x8": self.with_settings(size=8, frozen_prob=0.9, slippery=True, max_steps=100, **random_map),
        }


_TIE_TOL = 1e-12


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
