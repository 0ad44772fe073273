"""Two "nodes" on 127.0.0.1: two ``torchrun`` launches (``--nnodes=2``, one process each) run one fit."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dist_helpers import TIMEOUT_S, WORKER, clean_env, fast_args, free_port, read_ranks


@pytest.mark.slow
def test_two_nodes_via_torchrun_end_identical(tmp_path):
    port = free_port()
    out = tmp_path / "out"
    args = fast_args(tmp_path / "run", "--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=1",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                str(WORKER),
                str(out),
                *args,
            ],  # fmt: skip
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-4000:] for log in logs)
    r0, r1 = read_ranks(out, 2)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["param_sha256"] == r1["param_sha256"] != r0["initial_param_sha256"]
    assert r0["local_returns"] != r1["local_returns"]  # each node played its own groups
    assert r0["metrics"]["rollout/return_mean"] == r1["metrics"]["rollout/return_mean"]
