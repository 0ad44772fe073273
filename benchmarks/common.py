"""Shared pieces of the learning benchmarks: build a recipe without running it, train under a budget, and
run several seeds, each in its own process, with one aggregate JSON line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from msgrpo.tools.runs import FLOAT_PATHS, Run, add_grid_arguments, float_path, grid, run_each, wilson_interval

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


__all__ = ["FLOAT_PATHS", "add_seed_arguments", "float_path", "grid", "wilson_interval"]  # (the grid's parts)


def add_seed_arguments(parser) -> None:
    """``--seeds``, ``--float-paths`` (one process per run when several), ``--threads`` and ``--parallel``."""
    add_grid_arguments(parser)


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


def run_grid(script: str, argv: list[str], runs: list[Run], parallel: int, out: str) -> list[dict]:
    """Run the benchmark ``script`` once per run of the grid (:func:`msgrpo.tools.runs.run_each`: its own
    process with the path's environment), each training into ``<out>/<path>-<threads>t-seed_<k>``; each
    run's last JSON line, tagged with its seed, path and threads."""
    base = _strip(argv, {"--seeds": -1, "--parallel": 1, "--out": 1, "--float-paths": -1, "--threads": 1})

    def command(run: Run) -> list[str]:
        return [sys.executable, script, "--seeds", str(run.seed), "--float-paths", f"{run.path}@{run.threads}",
                "--out", str(Path(out) / run.name), *base]  # fmt: skip

    return run_each(runs, command, out, parallel)


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
