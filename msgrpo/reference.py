"""Deprecated: the reference players moved beside what they play (``msgrpo.reference`` keeps working for
one release, with a warning).

* :mod:`msgrpo.players`: ``ReferencePolicy``, ``RandomPolicy``, ``play_reference``;
* :mod:`msgrpo.components.games.frozen_lake`: ``FrozenLakeOptimal``, ``frozen_lake_q_values``, ``best_action``,
  ``optimal_success_probability``;
* :mod:`msgrpo.components.games.snake`: ``SnakeGreedy``.
"""

from __future__ import annotations

import warnings

from msgrpo.components.games.frozen_lake import (
    FrozenLakeOptimal,
    best_action,
    frozen_lake_q_values,
    optimal_success_probability,
)
from msgrpo.components.games.snake import SnakeGreedy
from msgrpo.players import RandomPolicy, ReferencePolicy, play_reference

__all__ = [
    "FrozenLakeOptimal", "RandomPolicy", "ReferencePolicy", "SnakeGreedy", "best_action", "frozen_lake_q_values",
    "optimal_success_probability", "play_reference",
]  # fmt: skip

warnings.warn(
    "msgrpo.reference is deprecated: import from msgrpo.players (RandomPolicy, ReferencePolicy, play_reference) "
    "and from the games (msgrpo.components.games.frozen_lake.FrozenLakeOptimal, "
    "msgrpo.components.games.snake.SnakeGreedy)",
    FutureWarning,
    stacklevel=2,
)
