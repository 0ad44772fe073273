"""Helpers for distributed tests: each run is a separate process tree (``ddp`` re-runs its script)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from fast_fit import FAST_FIT, run_dir

WORKER = Path(__file__).with_name("run_fit.py")
TIMEOUT_S = 150

# fast_fit's small run (2 groups x 2 episodes, the smallest tiny model, random fallback moves, unconstrained
# answers) for 2 iterations, with one validation at the end
FAST = [
    *FAST_FIT,
    "--trainer.max_epochs=2",
    "--trainer.limit_val_batches=null",  # (the default: every validation batch; FAST_FIT has none)
    "--trainer.check_val_every_n_epoch=2",
    "--data.eval_episodes=5",
    "--data.eval_scenarios=[train]",
    # invalid answers play random moves (FAST_FIT's fallback) on a random map per group (the recipe's default
    # is the classic map): returns and evaluation results are not all alike
    "--data.game.init_args.map_name=null",
    # parameters move only through gradients (no weight decay): "changed" means "learned"
    "--model.optimizer.init_args.weight_decay=0",
]


# Comparing the parameters of two runs that differ only in how gradients are reduced (DDP all-reduce vs FSDP2
# reduce-scatter): plain SGD keeps their float rounding differences at rounding size. Adam does not: it
# divides each gradient element by its own running magnitude, so for elements whose gradient is nearly 0
# a rounding difference of 1e-9 becomes an update difference of up to the learning rate (2e-5 seen with
# lr 3e-3 on a few of 100k weights), and no tolerance separates that from a real bug.
SGD = ["--model.optimizer=torch.optim.SGD", "--model.optimizer.init_args.lr=0.1"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any distributed variables (so a launch never joins a stale group)."""
    drop = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("TORCHELASTIC", "PL_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
        MSGRPO_WORKER_TIMEOUT=str(TIMEOUT_S - 10),
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_args(root: Path, *extra: str) -> list[str]:
    return [*FAST, *run_dir(root), *extra]


def read_ranks(out: Path, world: int) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout or "")[-3000:] + (proc.stderr or "")[-6000:]


def run_worker(root: Path, *args: str, world: int = 2) -> list[dict]:
    """Run the worker under ``root`` (Lightning launches the other ranks) and return the per-rank
    reports; the full parameters of rank 0 are in ``root / "out" / "params.pt"``."""
    out = root / "out"
    cmd = [sys.executable, str(WORKER), str(out), *fast_args(root / "run", *args)]
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    check(proc)
    return read_ranks(out, world)
