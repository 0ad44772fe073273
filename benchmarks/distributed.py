"""Distributed training on the CPU: wall time and peak memory per rank, 1 process vs 2-process DDP and FSDP2.

Usage::

    python benchmarks/distributed.py [--model tiny|10m] [--iterations 3] [--groups 4] [--group-size 4] [--repeats 1]

Each configuration is a fresh launch of ``tests/distributed/run_fit.py`` (the Frozen Lake recipe, tiny
offline model, one torch thread per process, gloo): ``single`` (1 process), ``ddp`` (Lightning ``ddp``,
2 processes) and ``fsdp2`` (``ModelParallelStrategy``, FSDP2 ``fully_shard``, 2 processes). ``--model 10m`` uses an 8.5M
parameter tiny model (hidden 256, 8 layers), where sharding shows in the memory figures. Every rank plays
``groups x group-size`` episodes per iteration, so 2 processes play twice the episodes of 1. Prints one
JSON object: per configuration the launch wall time (imports and process start included), each rank's
training time (from ``on_fit_start``, after the processes have joined, to the end of ``fit``) and peak RSS,
and episodes per second of training time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed" / "run_fit.py"

CONFIGS = {
    "single": ["--trainer.devices=1"],
    "ddp": ["--trainer.strategy=ddp", "--trainer.devices=2"],
    "fsdp2": [
        "--trainer.strategy=ModelParallelStrategy",
        "--trainer.strategy.data_parallel_size=2",
        "--trainer.strategy.tensor_parallel_size=1",
        "--trainer.devices=2",
    ],
}


MODELS = {
    "tiny": [],
    "10m": [
        "--model.policy.init_args.tiny.hidden_size=256",
        "--model.policy.init_args.tiny.num_layers=8",
        "--model.policy.init_args.tiny.num_heads=8",
        "--model.policy.init_args.tiny.intermediate_size=1024",
    ],
}


def _env(threads: int) -> dict[str, str]:
    drop = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads), MSGRPO_THREADS=str(threads)
    )
    return env


def run(name: str, args: argparse.Namespace, root: Path) -> dict:
    out = root / name
    common = [
        "--trainer.accelerator=cpu",
        f"--trainer.max_epochs={args.iterations}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={out / 'run'}",
        f"--data.num_groups={args.groups}",
        f"--data.group_size={args.group_size}",
        f"--data.sampler.init_args.num_episodes={args.groups * args.group_size // 2}",
        *MODELS[args.model],
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out / "report"), *common, *CONFIGS[name]],
        env=_env(args.threads),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
    world = 1 if name == "single" else 2
    ranks = [json.loads((out / "report" / f"rank{r}.json").read_text()) for r in range(world)]
    episodes = world * args.groups * args.group_size * args.iterations
    train_s = max(r["train_s"] for r in ranks)
    return {
        "processes": world,
        "launch_wall_s": round(wall, 2),
        "train_s_per_rank": [round(r["train_s"], 2) for r in ranks],
        "peak_rss_mb_per_rank": [round(r["peak_rss_mb"], 1) for r in ranks],
        "episodes": episodes,
        "episodes_per_train_s": round(episodes / train_s, 2),
        "identical_parameters_across_ranks": len({r["param_sha256"] for r in ranks}) == 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--groups", type=int, default=4, help="groups per rank and iteration")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (the fastest is kept)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CONFIGS:
            runs = [run(name, args, Path(tmp) / f"{name}{i}") for i in range(args.repeats)]
            results[name] = min(runs, key=lambda r: r["launch_wall_s"])
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "distributed_cpu",
                "settings": {
                    "iterations": args.iterations,
                    "groups_per_rank": args.groups,
                    "group_size": args.group_size,
                    "model": args.model,
                    "torch_threads_per_process": args.threads,
                    "cpu_count": os.cpu_count(),
                },
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
