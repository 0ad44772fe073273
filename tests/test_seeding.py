"""Named seeding streams: replayable per (seed, iteration, rank), distinct across them."""

import torch

from msgrpo.evaluation import PANEL_SEED
from msgrpo.seeding import SeedStreams, run_seed


def test_streams_replay_and_differ():
    a, b = SeedStreams(3), SeedStreams(4)
    assert a.group_seeds(5, 0, 4) == SeedStreams(3).group_seeds(5, 0, 4)
    seeds = a.group_seeds(5, 0, 4) + a.group_seeds(5, 1, 4) + a.group_seeds(6, 0, 4) + b.group_seeds(5, 0, 4)
    assert len(set(seeds)) == 16 and max(seeds) < PANEL_SEED  # training never plays an evaluation seed
    g1, c1 = a.generators(2, 0, torch.device("cpu"))
    g2, c2 = a.generators(2, 0, torch.device("cpu"))
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert torch.equal(torch.rand(3, generator=c1), torch.rand(3, generator=c2))
    assert a.torch_seed(2, 0) != a.torch_seed(2, 1) != a.torch_seed(3, 0)


def test_run_seed_follows_seed_everything(monkeypatch):
    assert run_seed() == 0
    monkeypatch.setenv("PL_GLOBAL_SEED", "4243")
    assert run_seed() == 4243
