"""Shared pieces of the learning benchmarks: build a recipe without running it, train under a budget."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_recipe(config: str, out: str, minutes: float, max_iterations: int, seed: int, extra: list[str]):
    """A recipe's ``MSGRPOCLI`` with ``run=False``: trainer, module and data module ready to fit."""
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
