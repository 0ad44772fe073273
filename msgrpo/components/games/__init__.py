"""Built-in text-mediated games.

Their gymnasium envs are registered by ``import msgrpo`` (``gym.make("msgrpo/Snake-v0")``,
``gym.make("msgrpo/FrozenLake-v0")``).
"""

from msgrpo.components.games.frozen_lake import FrozenLake, RandomMapFrozenLake
from msgrpo.components.games.gymnasium_game import GymnasiumGame
from msgrpo.components.games.snake import Snake, SnakeEnv, greedy_action, safe_moves

__all__ = ["FrozenLake", "GymnasiumGame", "RandomMapFrozenLake", "Snake", "SnakeEnv", "greedy_action", "safe_moves"]
