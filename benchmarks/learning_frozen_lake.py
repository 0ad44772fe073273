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
import time

from common import build_recipe, curve, evaluate_modes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", choices=["classic", "random"], default="classic")
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes (fixed seeds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_frozen_lake")
    parser.add_argument("overrides", nargs="*", help="extra recipe arguments, e.g. --model.optimizer.init_args.lr=3e-3")
    args = parser.parse_args(argv)

    extra = [f"--data.eval_episodes={args.episodes}", "--data.eval_scenarios=[train]"]
    if args.map == "classic":
        extra.append("--data.game.init_args.map_name=4x4")
    cli = build_recipe(
        "frozen_lake.yaml", args.out, args.minutes, args.max_iterations, args.seed, extra + args.overrides
    )
    module, data = cli.model, cli.datamodule
    scenario = data.panel[0]
    initial = evaluate_modes(module, scenario)
    print(f"initial: {json.dumps({k: v['success_rate'] for k, v in initial.items()})}", flush=True)
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    final = evaluate_modes(module, scenario)
    result = {
        "map": args.map,
        "iterations": len(module.history),
        "wall_s": round(wall, 1),
        "initial_success_rate": initial["greedy"]["success_rate"],
        "final_success_rate": final["greedy"]["success_rate"],
        "initial_success_rate_sampled": initial["sampled"]["success_rate"],
        "final_success_rate_sampled": final["sampled"]["success_rate"],
        "final_invalid_action_rate_sampled": final["sampled"]["invalid_action_rate"],
        "eval_episodes": args.episodes,
        "train_rollout_success_curve": curve(module.history),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
