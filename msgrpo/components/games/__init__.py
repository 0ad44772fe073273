"""Built-in text-mediated games.

Importing this package registers ``msgrpo/Snake-v0`` with gymnasium (``gym.make("msgrpo/Snake-v0")``).
"""

from gymnasium.envs.registration import register, registry

from msgrpo.components.games.frozen_lake import FrozenLake, RandomMapFrozenLake
from msgrpo.components.games.snake import Snake, SnakeEnv, greedy_action, safe_moves

if "msgrpo/Snake-v0" not in registry:
    register(id="msgrpo/Snake-v0", entry_point="msgrpo.components.games.snake:SnakeEnv")

__all__ = ["FrozenLake", "RandomMapFrozenLake", "Snake", "SnakeEnv", "greedy_action", "safe_moves"]
