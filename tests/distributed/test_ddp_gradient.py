"""The gradient of a 2-rank data-parallel update equals the single-process gradient of the same samples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_helpers import clean_env

WORKER = Path(__file__).with_name("grad_worker.py")


@pytest.fixture(scope="module")
def grads(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("grads")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out)], env=clean_env(), capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out / "grads.pt")


@pytest.mark.parametrize("loss", ["token-mean", "sequence-mean", "kl"])
def test_two_rank_gradient_equals_single_process_gradient(grads, loss):
    result = grads[loss]
    local, total = result["tokens"]
    assert 0 < local < total  # rank 0 really held only part of the samples (and not half the tokens)
    single, ranks = result["single"], result["ranks"]
    assert single.keys() == ranks.keys() and single
    for name in single:
        torch.testing.assert_close(ranks[name], single[name], atol=1e-7, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in single.values())
