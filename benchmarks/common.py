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
        f"--trainer.logger.init_args.save_dir={out}",
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


def add_seed_arguments(parser) -> None:
    """``--seeds`` (one process per seed when several) and ``--parallel``."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds (seed_everything)")
    parser.add_argument(
        "--parallel", type=int, default=1, help="seeds run at once (each in its own process; 2 cores: at most 2)"
    )


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


def run_seeds(script: str, argv: list[str], seeds: list[int], parallel: int, out: str) -> dict[int, dict]:
    """Run ``script`` once per seed, each in its own process (``parallel`` at once); its last JSON line.

    Each run writes ``<out>/seed_<k>.log`` (everything it printed) and trains into ``<out>/seed_<k>``.
    """
    base = _strip(argv, {"--seeds": -1, "--parallel": 1, "--out": 1})
    Path(out).mkdir(parents=True, exist_ok=True)

    def one(seed: int) -> tuple[int, dict]:
        log = Path(out) / f"seed_{seed}.log"
        cmd = [sys.executable, script, "--seeds", str(seed), "--out", str(Path(out) / f"seed_{seed}"), *base]
        start = time.perf_counter()
        with open(log, "w") as handle:
            proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, text=True)
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            return seed, {"error": f"exit {proc.returncode}, see {log}", "met_target": False}
        result = json.loads(lines[-1])
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s, met target: {result.get('met_target')}", flush=True)
        return seed, result

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return dict(pool.map(one, seeds))


def aggregate(per_seed: dict[int, dict], metrics: list[str]) -> dict:
    """Per-seed results plus the count that met the target and the mean and 95% CI of ``metrics``."""
    from msgrpo.report import mean_ci

    ok = [r for r in per_seed.values() if "error" not in r]
    summary = {}
    for metric in metrics:
        values = [float(r[metric]) for r in ok if metric in r]
        if values:
            summary[metric] = {k: round(v, 4) for k, v in mean_ci(values).items()}
    return {
        "seeds": sorted(per_seed),
        "met_target": sum(bool(r.get("met_target")) for r in per_seed.values()),
        "n": len(per_seed),
        "summary": summary,
        "per_seed": {str(k): v for k, v in sorted(per_seed.items())},
    }
