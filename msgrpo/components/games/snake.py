"""Multi-agent Snake (rules after SnakeBench) as a text-mediated game.

Rules (each one tested in ``tests/components/games/test_snake.py``):

* The board is ``width`` x ``height``; cells are ``(x, y)`` with ``(0, 0)`` bottom-left and up = ``y + 1``.
* Snake 0 is the learner, snakes ``1..num_opponents`` are scripted opponents. A snake is a list of cells,
  head first; every snake starts as one cell on a random free cell.
* Each round all alive snakes move one cell at the same time. A snake whose new head lands on an apple grows
  (its tail stays); otherwise its tail moves on, so the tail cell vacated this round is free.
* A snake dies when its new head is off the board, on a body cell of any snake after this round's moves
  (its own included; a vacated tail is free unless its snake ate), on another snake's new head
  (head-to-head: both die), or when two snakes swap cells. The positions of every snake alive at the start
  of the round count, including snakes dying in the same round. Dead snakes leave the board.
* Only a surviving snake eats. An apple gives ``apple_reward`` and growth, then respawns on a random free
  cell. A poison apple gives ``-apple_reward``, no growth, and respawns as poison.
* The learner's reward per round: ``-1 - death_penalty`` when it dies, else ``step_reward`` plus its apples.
* ``terminated``: the learner died, or opponents existed and at most one snake is alive (every opponent
  dead while the learner lives: the learner won). ``truncated``: ``max_rounds`` rounds were played.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from msgrpo.errors import require
from msgrpo.game import ReferencePolicy, TextGame, grid_to_text

ACTIONS = ["up", "down", "left", "right"]
MOVES = [(0, 1), (0, -1), (-1, 0), (1, 0)]
#: Observation codes of :class:`SnakeEnv` (``obs[y, x]``).
EMPTY, APPLE, POISON, OWN_HEAD, OWN_BODY, OPPONENT_HEAD, OPPONENT_BODY = range(7)

Cell = tuple[int, int]


def _cell(c: Sequence[int]) -> Cell:
    return int(c[0]), int(c[1])


def _fmt(cells: Sequence[Cell]) -> str:
    return ", ".join(f"({x}, {y})" for x, y in cells) or "none"


class SnakeEnv(gym.Env):
    """Snake against scripted opponents; see the module docstring for the rules.

    Args:
        width: Board width (x from 0 to ``width - 1``).
        height: Board height (y from 0 to ``height - 1``).
        num_apples: Apples on the board, poison ones included.
        num_opponents: Scripted opponent snakes (0 to 9).
        opponent: ``"random"`` (uniform among moves that are not fatal against the current bodies, any move
            if all are) or ``"greedy"`` (:func:`greedy_action`).
        max_rounds: Round limit; reaching it truncates the episode.
        apple_reward: Reward for an apple (a poison apple gives its negation).
        death_penalty: Extra penalty on death: dying gives ``-1 - death_penalty``.
        step_reward: Reward for every round the learner survives.
        poison_apples: How many of the ``num_apples`` apples are poison.
        surroundings: Text only (the game's rules do not change): :class:`Snake` also says, last in the
            observation, what is on the four cells next to your head (``Next to your head: up free, down
            wall, left your body, right apple.``, words from :data:`NEIGHBOUR_WORDS`). The same facts as
            the grid, read out where the answer is given: a model trained from scratch learns to avoid
            walls and bodies much sooner from it. Off by default: the
            observation of the paper's Snake.
        observation: Text only. ``"full"`` (the paper's: board size and coordinates, round, apples,
            every snake's head and body, a legend and the grid) or ``"compact"`` for small models: the
            round, your head and length, the apples, the opponents' heads and the four cells next to your
            head (``surroundings`` always), about a fifth of the full text's tokens. The same facts about
            what a move does next; the grid and the bodies' far cells are left out.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        width: int = 10,
        height: int = 10,
        num_apples: int = 5,
        num_opponents: int = 1,
        opponent: Literal["random", "greedy"] = "random",
        max_rounds: int = 8,
        apple_reward: float = 1.0,
        death_penalty: float = 0.0,
        step_reward: float = 0.0,
        poison_apples: int = 0,
        surroundings: bool = False,
        observation: Literal["full", "compact"] = "full",
    ) -> None:
        require(width >= 2, "width", ">= 2", width)
        require(height >= 2, "height", ">= 2", height)
        require(0 <= num_opponents <= 9, "num_opponents", "between 0 and 9", num_opponents)
        require(opponent in ("random", "greedy"), "opponent", "'random' or 'greedy'", opponent)
        require(num_apples >= 0, "num_apples", ">= 0", num_apples)
        require(0 <= poison_apples <= num_apples, "poison_apples", f"in [0, num_apples={num_apples}]", poison_apples)
        require(
            1 + num_opponents + num_apples <= width * height,
            "num_apples",
            f"at most {width * height - 1 - num_opponents} ({1 + num_opponents} snakes and the apples must fit on "
            f"the {width}x{height} board)",
            num_apples,
        )
        require(max_rounds >= 1, "max_rounds", ">= 1", max_rounds)
        require(death_penalty >= 0, "death_penalty", ">= 0 (death gives -1 - penalty)", death_penalty)
        require(observation in ("full", "compact"), "observation", "'full' or 'compact'", observation)
        self.width, self.height = width, height
        self.num_apples, self.poison_apples = num_apples, poison_apples
        self.num_opponents, self.opponent = num_opponents, opponent
        self.max_rounds = max_rounds
        self.apple_reward, self.death_penalty, self.step_reward = apple_reward, death_penalty, step_reward
        self.surroundings = surroundings
        self.observation = observation
        self.observation_space = gym.spaces.Box(0, OPPONENT_BODY, shape=(height, width), dtype=np.int8)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self.snakes: list[list[Cell]] = []
        self.alive: list[bool] = []
        self.scores: list[int] = []
        self.apples: list[Cell] = []
        self.poison: list[Cell] = []
        self.round = 0

    # ----- state ---------------------------------------------------------------------------------
    def inside(self, cell: Cell) -> bool:
        """Whether ``cell`` is on the board."""
        return 0 <= cell[0] < self.width and 0 <= cell[1] < self.height

    def occupied(self) -> set[Cell]:
        """Cells of alive snakes, apples and poison apples."""
        cells = {c for body, live in zip(self.snakes, self.alive, strict=True) if live for c in body}
        return cells | set(self.apples) | set(self.poison)

    @property
    def won(self) -> bool:
        """Opponents existed, all of them are dead and the learner is alive."""
        return len(self.snakes) > 1 and self.alive[0] and not any(self.alive[1:])

    def set_state(
        self,
        snakes: Sequence[Sequence[Sequence[int]]],
        apples: Sequence[Sequence[int]],
        poison: Sequence[Sequence[int]] = (),
        alive: Sequence[bool] | None = None,
        rounds_played: int = 0,
    ) -> None:
        """Set a hand-made state (scores restart at 0).

        Args:
            snakes: One cell list per snake (learner first, then ``num_opponents`` opponents), head first,
                consecutive cells adjacent.
            apples: Cells of the normal apples.
            poison: Cells of the poison apples.
            alive: Which snakes are alive (default: all). Dead snakes are off the board.
            rounds_played: Rounds already played (counts toward ``max_rounds``).
        """
        if len(snakes) != 1 + self.num_opponents:
            raise ValueError(f"expected {1 + self.num_opponents} snakes, got {len(snakes)}")
        alive = [True] * len(snakes) if alive is None else [bool(a) for a in alive]
        if len(alive) != len(snakes):
            raise ValueError(f"alive has {len(alive)} entries for {len(snakes)} snakes")
        bodies = [[_cell(c) for c in body] for body in snakes]
        for i, body in enumerate(bodies):
            if not body:
                raise ValueError(f"snake {i} has no cells")
            for a, b in pairwise(body):
                if abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1:
                    raise ValueError(f"snake {i} is not contiguous: {a} -> {b}")
        placed = [c for body, live in zip(bodies, alive, strict=True) if live for c in body]
        placed += [_cell(c) for c in apples] + [_cell(c) for c in poison]
        for c in placed:
            if not self.inside(c):
                raise ValueError(f"cell {c} is off the {self.width}x{self.height} board")
        if len(set(placed)) != len(placed):
            raise ValueError(f"cells overlap: {sorted({c for c in placed if placed.count(c) > 1})}")
        self.snakes, self.alive, self.scores = bodies, alive, [0] * len(bodies)
        self.apples, self.poison = [_cell(c) for c in apples], [_cell(c) for c in poison]
        self.round = rounds_played

    def _sample_free(self, k: int, taken: set[Cell]) -> list[Cell]:
        free = [(x, y) for y in range(self.height) for x in range(self.width) if (x, y) not in taken]
        picks = self.np_random.choice(len(free), size=min(k, len(free)), replace=False)
        return [free[int(i)] for i in picks]

    def _obs(self) -> np.ndarray:
        grid = np.full((self.height, self.width), EMPTY, dtype=np.int8)
        for x, y in self.apples:
            grid[y, x] = APPLE
        for x, y in self.poison:
            grid[y, x] = POISON
        for i, body in enumerate(self.snakes):
            if self.alive[i]:
                head, rest = (OWN_HEAD, OWN_BODY) if i == 0 else (OPPONENT_HEAD, OPPONENT_BODY)
                for x, y in body[1:]:
                    grid[y, x] = rest
                grid[body[0][1], body[0][0]] = head
        return grid

    def _info(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "score": self.scores[0],
            "scores": list(self.scores),
            "alive": self.alive[0],
            "alive_snakes": list(self.alive),
            "won": self.won,
        }

    # ----- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        n = 1 + self.num_opponents
        cells = self._sample_free(n + self.num_apples, set())
        normal = n + self.num_apples - self.poison_apples
        self.set_state([[c] for c in cells[:n]], cells[n:normal], cells[normal:])
        return self._obs(), self._info()

    def step(self, action):
        actions = [int(action)] + [self.opponent_action(i) for i in range(1, len(self.snakes))]
        reward = self.play_round(actions)
        terminated = not self.alive[0] or (len(self.snakes) > 1 and sum(self.alive) <= 1)
        truncated = not terminated and self.round >= self.max_rounds
        return self._obs(), reward, terminated, truncated, self._info()

    def opponent_action(self, snake: int) -> int:
        """The scripted move of opponent ``snake`` (0 for a dead one; random draws use ``np_random``)."""
        if not self.alive[snake]:
            return 0
        if self.opponent == "greedy":
            return greedy_action(self, snake)
        moves = safe_moves(self, snake) or list(range(len(ACTIONS)))
        return int(moves[int(self.np_random.integers(len(moves)))])

    def play_round(self, actions: Sequence[int]) -> float:
        """Move every alive snake with its action at once; returns the learner's reward.

        Args:
            actions: One action per snake (ignored for dead snakes).
        """
        movers = [i for i, live in enumerate(self.alive) if live]
        heads: dict[int, Cell] = {}
        bodies: dict[int, list[Cell]] = {}
        for i in movers:
            dx, dy = MOVES[int(actions[i])]
            body = self.snakes[i]
            heads[i] = (body[0][0] + dx, body[0][1] + dy)
            bodies[i] = [heads[i]] + (body if heads[i] in self.apples else body[:-1])
        dead = set()
        for i in movers:
            head = heads[i]
            if not self.inside(head) or any(head in bodies[j][1:] for j in movers):
                dead.add(i)
            for j in movers:
                swap = heads[j] == self.snakes[i][0] and head == self.snakes[j][0]
                if j != i and (heads[j] == head or swap):
                    dead |= {i, j}
        reward = 0.0 if 0 in dead else self.step_reward
        eaten_apples = eaten_poison = 0
        for i in movers:
            if i in dead:
                self.alive[i] = False
                continue
            self.snakes[i] = bodies[i]
            value = 1 if heads[i] in self.apples else -1 if heads[i] in self.poison else 0
            if value:
                (self.apples if value > 0 else self.poison).remove(heads[i])
                eaten_apples, eaten_poison = eaten_apples + (value > 0), eaten_poison + (value < 0)
                self.scores[i] += value
                if i == 0:
                    reward += value * self.apple_reward
        self.apples += self._sample_free(eaten_apples, self.occupied())
        self.poison += self._sample_free(eaten_poison, self.occupied())
        self.round += 1
        return -1.0 - self.death_penalty if 0 in dead else float(reward)


def safe_moves(env: gym.Env, snake: int = 0) -> list[int]:
    """Actions of ``snake`` not fatal against the current bodies (walls, bodies; every tail moves on).

    Only the present board is considered: other snakes' moves (head-to-head, or a tail kept because its
    snake eats) are not foreseen.
    """
    game: SnakeEnv = env.unwrapped  # type: ignore[assignment]
    blocked = _bodies_without_tails(game)
    x, y = game.snakes[snake][0]
    cells = [(x + dx, y + dy) for dx, dy in MOVES]
    return [a for a, cell in enumerate(cells) if game.inside(cell) and cell not in blocked]


def _bodies_without_tails(game: SnakeEnv) -> set[Cell]:
    return {c for body, live in zip(game.snakes, game.alive, strict=True) if live for c in body[:-1]}


def _apple_distance(game: SnakeEnv, start: Cell, blocked: set[Cell]) -> int:
    """BFS steps from ``start`` to the nearest normal apple through free cells (large if unreachable)."""
    targets, seen, queue = set(game.apples), {start}, deque([(start, 0)])
    while queue:
        cell, dist = queue.popleft()
        if cell in targets:
            return dist
        for dx, dy in MOVES:
            nxt = (cell[0] + dx, cell[1] + dy)
            if game.inside(nxt) and nxt not in blocked and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, dist + 1))
    return game.width * game.height


def greedy_action(env: gym.Env, snake: int = 0) -> int:
    """Scripted policy: a safe first step of a shortest path to the nearest normal apple.

    Among :func:`safe_moves`, prefers (in this order) cells no other head can reach this round, cells
    without poison, the shortest BFS distance to a normal apple (avoiding bodies and poison), and the
    lowest action index (up, down, left, right). With no safe move it returns 0 (up).
    """
    game: SnakeEnv = env.unwrapped  # type: ignore[assignment]
    blocked = _bodies_without_tails(game) | set(game.poison)
    others = [body[0] for j, body in enumerate(game.snakes) if game.alive[j] and j != snake]
    contested = {(hx + dx, hy + dy) for hx, hy in others for dx, dy in MOVES}
    x, y = game.snakes[snake][0]
    keys = []
    for a in safe_moves(game, snake):
        cell = (x + MOVES[a][0], y + MOVES[a][1])
        keys.append((cell in contested, cell in game.poison, _apple_distance(game, cell, blocked), a))
    return min(keys)[-1] if keys else 0


def _cells(game: SnakeEnv, opponent_head: Callable[[int], str]) -> list[list[str]]:
    """The board as cells, ``[y][x]`` (bottom row first): ``A`` apple, ``X`` poison, ``Y``/``y`` your head
    and body, ``o`` an opponent's body and ``opponent_head(i)`` opponent ``i``'s head; dead snakes left off."""
    cells = [["." for _ in range(game.width)] for _ in range(game.height)]
    for x, y in game.apples:
        cells[y][x] = "A"
    for x, y in game.poison:
        cells[y][x] = "X"
    for i, body in enumerate(game.snakes):
        if game.alive[i]:
            for x, y in body[1:]:
                cells[y][x] = "y" if i == 0 else "o"
            cells[body[0][1]][body[0][0]] = "Y" if i == 0 else opponent_head(i)
    return cells


#: How :class:`Snake` (``surroundings=True``) names what is on a cell next to your head, by grid letter.
NEIGHBOUR_WORDS = {".": "free", "A": "apple", "X": "poison", "y": "your body", "o": "opponent body"}


def neighbours_text(game: SnakeEnv, rows: list[list[str]]) -> str:
    """``Next to your head: up free, down wall, left your body, right opponent head.``

    Args:
        game: The env (its learner alive).
        rows: Its cells from :func:`_cells`, ``rows[y][x]`` (opponent heads as digits).
    """
    hx, hy = game.snakes[0][0]
    parts = []
    for name, (dx, dy) in zip(ACTIONS, MOVES, strict=True):
        x, y = hx + dx, hy + dy
        what = "wall" if not game.inside((x, y)) else NEIGHBOUR_WORDS.get(rows[y][x], "opponent head")
        parts.append(f"{name} {what}")
    return f"Next to your head: {', '.join(parts)}."


def compact_text(game: SnakeEnv, rows: list[list[str]]) -> str:
    """The compact observation (``observation="compact"``): what a move decides, in few tokens. ::

        Round 3 of 8. Apples: (1, 2), (7, 7). Opponent 1 head: (6, 4).
        You (score 0, length 2): head (4, 5). Next to your head: up free, down your body, left free, right wall.

    Args:
        game: The env.
        rows: Its cells from :func:`_cells`, ``rows[y][x]`` (opponent heads as digits).
    """
    parts = [f"Round {min(game.round + 1, game.max_rounds)} of {game.max_rounds}.", f"Apples: {_fmt(game.apples)}."]
    if game.poison_apples or game.poison:
        parts.append(f"Poison apples: {_fmt(game.poison)}.")
    for i, body in enumerate(game.snakes[1:], start=1):
        parts.append(f"Opponent {i} head: {_fmt(body[:1])}." if game.alive[i] else f"Opponent {i}: dead.")
    first = " ".join(parts)
    if not game.alive[0]:
        return f"{first}\nYou are dead (score {game.scores[0]})."
    you = f"You (score {game.scores[0]}, length {len(game.snakes[0])}): head {_fmt(game.snakes[0][:1])}."
    return f"{first}\n{you} {neighbours_text(game, rows)}"


class Snake(TextGame):
    """Snake with a text interface.

    Args:
        **settings: The :class:`SnakeEnv` settings, by keyword (its signature is the one list of them; the
            CLI shows them as ``--data.game.init_args.width`` and so on): ``width``, ``height``,
            ``num_apples``, ``num_opponents``, ``opponent``, ``max_rounds``, ``apple_reward``,
            ``death_penalty``, ``step_reward``, ``poison_apples``, ``surroundings`` and ``observation``
            (the last two change only the text: see :class:`SnakeEnv`).
        format_penalty: Subtracted from the reward of a step whose text names no valid action.
        fallback: Action for such text: ``"first"`` (up) or ``"random"`` (Snake has no no-op).
        parser: Action parser (default: the ``<action>`` tag).
        answer_format: The instruction after every observation (see :class:`~msgrpo.game.TextGame`).

    An episode is a success when the learner is alive at its end: it survived the round limit, or every
    opponent died first.
    """

    action_names = ACTIONS
    success_meaning = "your snake alive at the end"

    def build_env(self, **settings: Any) -> SnakeEnv:
        return SnakeEnv(**settings)

    def rules(self) -> str:
        s = self.settings
        n = s["num_opponents"]
        rivals = f"against {n} opponent snake{'s' if n > 1 else ''}" if n else "alone"
        poison = (
            f" {s['poison_apples']} of the {s['num_apples']} apples are poison: eating one gives "
            f"{-s['apple_reward']:g}, does not make you longer, and it reappears elsewhere."
            if s["poison_apples"]
            else ""
        )
        step = f" Every round you survive gives {s['step_reward']:g}." if s["step_reward"] else ""
        end = " or when at most one snake is left alive (if every opponent dies, you win)" if n else ""
        return (
            f"You are playing Snake on a {s['width']}x{s['height']} board {rivals}. Coordinates are (x, y): "
            "(0, 0) is the bottom-left cell, up is y+1, down is y-1, right is x+1, left is x-1. "
            "Actions: up, down, left, right. Every round all snakes move one cell at the same time. "
            f"Eating an apple gives {s['apple_reward']:g} and makes your snake one cell longer; the apple "
            f"reappears on a random free cell.{poison} A snake dies when its head leaves the board, enters "
            "any snake's body (its own included), or meets another snake's head (both die). A tail cell "
            "that its snake leaves this round is free, unless that snake just ate. Dying gives "
            f"{-1 - s['death_penalty']:g} and ends the game.{step} The game ends after {s['max_rounds']} "
            f"rounds{end}. Stay alive and eat as many apples as you can."
        )

    def render(self, env: gym.Env) -> str:
        game: SnakeEnv = env.unwrapped  # type: ignore[assignment]
        rows = _cells(game, opponent_head=str)
        if game.observation == "compact":
            return compact_text(game, rows)
        lines = [
            f"Board: {game.width}x{game.height}. Coordinates are (x, y): (0, 0) is the bottom-left cell, "
            "x grows to the right and y grows upward (up is y+1).",
            f"Round: {min(game.round + 1, game.max_rounds)} of {game.max_rounds}",
            f"Apples: {_fmt(game.apples)}",
        ]
        if game.poison_apples or game.poison:
            lines.append(f"Poison apples: {_fmt(game.poison)}")
        for i, body in enumerate(game.snakes):
            name = "Your snake" if i == 0 else f"Opponent {i}"
            state = "" if game.alive[i] else "dead, "
            cells = f"head {_fmt(body[:1])}, body {_fmt(body[1:])}"
            lines.append(f"{name} ({state}score {game.scores[i]}): {cells}")
        heads = "".join(f", {i} = head of opponent {i}" for i in range(1, len(game.snakes)))
        opponent_body = ", o = opponent body" if len(game.snakes) > 1 else ""
        poison = ", X = poison apple" if game.poison_apples or game.poison else ""
        lines.append(f"Legend: Y = your head, y = your body{heads}{opponent_body}, A = apple{poison}, . = empty cell.")
        lines.append(f"Grid (top row is y = {game.height - 1}):\n{grid_to_text(rows[::-1])}")
        if game.alive[0]:  # the cell every move is taken from, last: right before the answer
            lines.append(f"Your head is at {_fmt(game.snakes[0][:1])}.")
            if game.surroundings:
                lines.append(neighbours_text(game, rows))
        return "\n".join(lines)

    def is_success(self, reward: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> bool:
        """The learner is alive when the episode ends (survived the round limit or won)."""
        return bool((terminated or truncated) and info.get("alive", False))

    def reference_policies(self) -> dict:
        """A random player and the scripted greedy one (shortest safe path to the nearest apple)."""
        return {**super().reference_policies(), "greedy": SnakeGreedy()}

    def frame(self, env: gym.Env):
        """The board: apples, poison, your snake (green) and the opponents (blue; heads darker)."""
        from msgrpo.observe.frames import grid_image

        game: SnakeEnv = env.unwrapped  # type: ignore[assignment]
        cells = _cells(game, opponent_head=lambda i: "O")
        colours = {".": "white", "A": "#d33c3c", "X": "#8e44ad", "Y": "#1e7d32", "y": "#66bb6a", "O": "#1f4e9c",
                   "o": "#7fa7e0"}  # fmt: skip
        state = "" if game.alive[0] else ", you died"
        return grid_image(cells[::-1], colours, caption=f"round {game.round}, score {game.scores[0]}{state}")

    def default_scenarios(self) -> list[str]:
        """The four evaluation panels (``train`` is one of them in the recipe's settings)."""
        return ["default-8", "long-20", "poison", "two-opponents"]

    def scenarios(self) -> dict[str, TextGame]:
        """``train`` (this game as configured) plus the evaluation panels.

        The panels fix the board rules (10x10, 5 apples, random opponents) and keep this game's rewards.
        """
        base = dict(width=10, height=10, num_apples=5, num_opponents=1, opponent="random", poison_apples=0)
        return {
            "train": self,
            "default-8": self.with_settings(**base, max_rounds=8),
            "long-20": self.with_settings(**base, max_rounds=20),
            "poison": self.with_settings(**{**base, "poison_apples": 2}, max_rounds=8),
            "two-opponents": self.with_settings(**{**base, "num_opponents": 2}, max_rounds=8),
        }


class SnakeGreedy(ReferencePolicy):
    """Snake's scripted greedy player for the learner (safe first step towards the nearest apple)."""

    name = "greedy"

    def act(self, game: TextGame, env: gym.Env) -> int:
        return int(greedy_action(env, 0))
