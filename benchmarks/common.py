"""Shared pieces of the learning benchmarks: build a recipe without running it, train under a budget, and
run several seeds, each in its own process, with one aggregate JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_recipe(config: str, out: str, minutes: float, max_iterations: int, seed: int, extra: list[str]):
    """A recipe's ``MSGRPOCLI`` with ``run=False``: trainer, module and data module ready to fit.

    ``seed`` goes in as ``--seed_everything``, from which every seed of the run derives.
    """
    import torch

    from msgrpo.cli import MSGRPOCLI, config_path

    torch.set_num_threads(int(os.environ.get("MSGRPO_THREADS", 0)) or os.cpu_count() or 1)
    total = int(minutes * 60)
    args = [
        f"--seed_everything={seed}",
        f"--trainer.max_epochs={max_iterations}",
        f"--trainer.max_time=00:{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={out}",
    ]
    return MSGRPOCLI(default_config=config_path(config), args=args + extra, run=False)


def evaluate_modes(module, scenario, modes=("greedy", "sampled")) -> dict[str, dict[str, float]]:
    """Evaluate with greedy and/or sampled decoding."""
    greedy = module.eval_greedy
    out = {}
    for mode in modes:
        module.eval_greedy = mode == "greedy"
        out[mode] = module.evaluate(scenario)
    module.eval_greedy = greedy
    return out


def curve(history: list[dict[str, float]], key: str = "rollout/success_rate", points: int = 20) -> list:
    """About ``points`` (iteration, value) pairs of a training metric."""
    step = max(1, len(history) // points)
    return [(int(h["iteration"]), round(h.get(key, float("nan")), 3)) for h in history[::step]]


FLOAT_PATHS: dict[str, tuple[dict[str, str], list[str]]] = {
    # name -> (environment set before the run's process starts, extra recipe arguments)
    "native": ({}, []),
    # ATen's AVX2 kernels and MKL's AVX2 branch: on an AVX-512 CPU the path of AVX2-only CPUs; on AMD CPUs MKL
    # supports no pinned branch and takes its automatic CNR mode (itself another path than the native one)
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}, []),
    # the same maths by the framework's own invariant, another summation order: 4x smaller micro-batches
    "budget": ({}, ["--data.token_budget=4096"]),
    # ATen's scalar kernels and MKL's compatible branch: slow (2-3x), for spot checks
    "scalar": ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}, []),
    # the recipes' --reproducible switch (msgrpo.reproducible): the same numbers on every x86-64 CPU
    "reproducible": ({}, ["--reproducible=true"]),
}
"""Float paths a learning study samples: each changes the run's rounding the way another machine would."""


def add_seed_arguments(parser) -> None:
    """``--seeds``, ``--float-paths`` (one process per run when several) and ``--parallel``."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (seed_everything)")
    parser.add_argument(
        "--float-paths",
        nargs="+",
        default=["native"],
        metavar="PATH[@THREADS]",
        help=f"float paths of the grid, each with an optional thread count (native@1): {', '.join(FLOAT_PATHS)}",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads of a path given without @THREADS")
    parser.add_argument(
        "--parallel", type=int, default=1, help="runs at once (each in its own process; 2 cores: at most 2)"
    )


def float_path(spec: str, threads: int) -> tuple[str, int]:
    """``"native@1"`` -> ``("native", 1)``; a path without ``@`` gets ``threads``."""
    name, _, count = spec.partition("@")
    if name not in FLOAT_PATHS:
        raise SystemExit(f"error: unknown float path {name!r} (known: {', '.join(FLOAT_PATHS)})")
    return name, int(count) if count else threads


def grid(args) -> list[tuple[int, str, int]]:
    """The runs ``(seed, path, threads)`` of the parsed ``--seeds`` and ``--float-paths``."""
    return [(seed, *float_path(spec, args.threads)) for spec in args.float_paths for seed in args.seeds]


def path_arguments(args) -> list[str]:
    """The recipe arguments of this process's one float path (``--float-paths`` with one entry)."""
    name, _ = float_path(args.float_paths[0], args.threads)
    return FLOAT_PATHS[name][1]


def _strip(argv: list[str], options: dict[str, int]) -> list[str]:
    """``argv`` without the given options (name -> how many values follow; -1: every non-option value)."""
    head, sep, tail = (
        (argv[: argv.index("--")], ["--"], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [], [])
    )
    out, i = [], 0
    while i < len(head):
        name = head[i].split("=", 1)[0]
        if name in options:
            if "=" in head[i]:
                i += 1
                continue
            i += 1
            count = options[name]
            while i < len(head) and (count > 0 or (count < 0 and not head[i].startswith("--"))):
                i, count = i + 1, count - 1
            continue
        out.append(head[i])
        i += 1
    return out + sep + tail


def run_grid(script: str, argv: list[str], runs: list[tuple[int, str, int]], parallel: int, out: str) -> list[dict]:
    """Run ``script`` once per ``(seed, float path, threads)``, each in its own process (``parallel`` at
    once) with the path's environment and thread count set before it starts; each run's last JSON line,
    tagged with its seed, path and threads.

    Each run writes ``<out>/<path>-<threads>t-seed_<k>.log`` (everything it printed) and trains into the
    folder of the same name. A run's result is appended to ``<out>/runs.jsonl`` as soon as it finishes, so
    a long study keeps every finished run when it is interrupted.
    """
    base = _strip(argv, {"--seeds": -1, "--parallel": 1, "--out": 1, "--float-paths": -1, "--threads": 1})
    Path(out).mkdir(parents=True, exist_ok=True)

    def one(run: tuple[int, str, int]) -> dict:
        seed, path, threads = run
        name = f"{path}-{threads}t-seed_{seed}"
        log = Path(out) / f"{name}.log"
        cmd = [sys.executable, script, "--seeds", str(seed), "--float-paths", f"{path}@{threads}",
               "--out", str(Path(out) / name), *base]  # fmt: skip
        env = {**os.environ, **FLOAT_PATHS[path][0], "MSGRPO_THREADS": str(threads)}
        start = time.perf_counter()
        with open(log, "w") as handle:
            proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, text=True, env=env)
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        tag = {"seed": seed, "float_path": path, "threads": threads}
        if proc.returncode != 0 or not lines:
            result = {**tag, "error": f"exit {proc.returncode}, see {log}", "met_target": False}
        else:
            result = {**json.loads(lines[-1]), **tag}
        with open(Path(out) / "runs.jsonl", "a") as handle:
            handle.write(json.dumps(result) + "\n")
        print(f"{name}: {time.perf_counter() - start:.0f} s, met target: {result.get('met_target')}", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, runs))


def study(script: str, argv: list[str] | None, args, metrics: list[str]) -> dict | None:
    """With several runs in the grid (``--seeds`` x ``--float-paths``): run each in its own process, print
    the aggregate JSON line and return it; with one run: None (the caller trains in this process)."""
    runs = grid(args)
    if len(runs) == 1:
        return None
    result = aggregate(run_grid(script, list(sys.argv[1:] if argv is None else argv), runs, args.parallel, args.out),
                       metrics)  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


def wilson_interval(passed: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a pass rate ``passed / n`` (sensible at 0 and at n)."""
    if n == 0:
        return 0.0, 1.0
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def aggregate(runs: list[dict], metrics: list[str]) -> dict:
    """The runs, the count that met the target with the pass rate's 95% Wilson interval, and the mean and
    95% CI of ``metrics`` over the runs that finished."""
    from msgrpo.tools.report import mean_ci

    ok = [r for r in runs if "error" not in r]
    summary = {}
    for metric in metrics:
        values = [float(r[metric]) for r in ok if metric in r]
        if values:
            summary[metric] = {k: round(v, 4) for k, v in mean_ci(values).items()}
            summary[metric].update(min=min(values), max=max(values))  # (the worst run matters as much as the mean)
    passed = sum(bool(r.get("met_target")) for r in runs)
    low, high = wilson_interval(passed, len(runs))
    return {
        "seeds": sorted({r["seed"] for r in runs}),
        "float_paths": sorted({f"{r['float_path']}@{r['threads']}" for r in runs}),
        "met_target": passed,
        "n": len(runs),
        "pass_rate": round(passed / max(len(runs), 1), 4),
        "pass_rate_ci95": [round(low, 4), round(high, 4)],
        "summary": summary,
        "runs": runs,
    }
