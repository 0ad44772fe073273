"""Named seeding streams: every random number of a run derives from ``(seed, stream, iteration, rank)``.

Nothing random is carried from one iteration to the next, so a run resumed from a checkpoint replays
exactly the iterations it would have played, and ranks never draw the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

PANEL_SEED = 1_000_000
"""First reset seed of the evaluation panel; training draws its groups' seeds below it."""


def run_seed() -> int:
    """The run's seed: the one ``seed_everything`` set (``PL_GLOBAL_SEED``), else 0."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


@dataclass(frozen=True)
class SeedStreams:
    """The streams of one run.

    Attributes:
        seed: The run's data seed (``data.seed``).
    """

    seed: int

    def group_seeds(self, iteration: int, rank: int, num_groups: int) -> list[int]:
        """``groups`` stream: the reset seeds of a rank's groups at an iteration (below the panel seeds)."""
        rng = np.random.default_rng([self.seed, iteration, rank])
        return [int(s) for s in rng.integers(0, PANEL_SEED, size=num_groups)]

    def generators(self, iteration: int, rank: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """``sampling`` stream: (token sampling RNG on the model's device, CPU RNG for the episode sampler
        and the shuffles)."""
        base = int(np.random.default_rng([self.seed, iteration, rank, 1]).integers(2**62))
        return torch.Generator(device=device).manual_seed(base), torch.Generator().manual_seed(base + 1)

    def torch_seed(self, iteration: int, rank: int) -> int:
        """``torch`` stream: the seed of torch's global RNG for an iteration (anything else drawing from it)."""
        return int(np.random.default_rng([self.seed, iteration, rank, 2]).integers(2**62))
