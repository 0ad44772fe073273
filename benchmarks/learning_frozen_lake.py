"""Does the default Frozen Lake recipe learn? Train the random-init tiny model under a wall-clock budget.

Prints progress lines, then one JSON line (last) with ``initial_success_rate``, ``final_success_rate``
(greedy decoding, on a fixed panel of evaluation seeds), their sampled-decoding counterparts and
``wall_s``.

    python benchmarks/learning_frozen_lake.py --map classic --minutes 15
    python benchmarks/learning_frozen_lake.py --map random --minutes 15
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def evaluate(module, scenario) -> dict[str, float]:
    greedy = module.eval_greedy
    out = {}
    for mode, flag in (("greedy", True), ("sampled", False)):
        module.eval_greedy = flag
        out[mode] = module.evaluate(scenario)
    module.eval_greedy = greedy
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--map", choices=["classic", "random"], default="classic")
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes (fixed seeds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_frozen_lake")
    parser.add_argument(
        "overrides", nargs="*", help="extra recipe arguments, e.g. --model.optimizer.init_args.lr=3e-3"
    )
    args = parser.parse_args(argv)

    import torch

    from msgrpo.cli import MSGRPOCLI, config_path

    torch.set_num_threads(os.cpu_count() or 1)
    cli_args = [
        f"--seed_everything={args.seed}",
        f"--data.seed={args.seed}",
        f"--trainer.max_epochs={args.max_iterations}",
        f"--trainer.max_time=00:00:{int(args.minutes)}:{int((args.minutes % 1) * 60):02d}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={args.out}",
        f"--trainer.logger.init_args.save_dir={args.out}",
        f"--data.eval_episodes={args.episodes}",
        "--data.eval_scenarios=[train]",
    ]
    if args.map == "classic":
        cli_args.append("--data.game.init_args.map_name=4x4")
    cli = MSGRPOCLI(default_config=config_path("frozen_lake.yaml"), args=cli_args + args.overrides, run=False)
    module, data = cli.model, cli.datamodule
    scenario = data.panel[0]
    initial = evaluate(module, scenario)
    print(f"initial: {json.dumps({k: v['success_rate'] for k, v in initial.items()})}", flush=True)
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    final = evaluate(module, scenario)
    history = module.history
    curve = [
        (int(h["iteration"]), round(h.get("rollout/success_rate", float("nan")), 3))
        for h in history[:: max(1, len(history) // 20)]
    ]
    result = {
        "map": args.map,
        "iterations": len(history),
        "wall_s": round(wall, 1),
        "initial_success_rate": initial["greedy"]["success_rate"],
        "final_success_rate": final["greedy"]["success_rate"],
        "initial_success_rate_sampled": initial["sampled"]["success_rate"],
        "final_success_rate_sampled": final["sampled"]["success_rate"],
        "final_invalid_action_rate_sampled": final["sampled"]["invalid_action_rate"],
        "eval_episodes": args.episodes,
        "train_rollout_success_curve": curve,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
