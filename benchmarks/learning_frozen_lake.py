"""Does the default Frozen Lake recipe learn? Train the random-init tiny model under a wall-clock budget.

Prints progress lines, then one JSON line (last) with ``initial_success_rate``, ``final_success_rate``
(greedy decoding, on a fixed panel of evaluation seeds), their sampled-decoding counterparts, ``wall_s``
and ``met_target`` (greedy and sampled final success both >= ``--target``). With several ``--seeds``
each seed runs in its own process (``--parallel`` at once) and the last line aggregates them: per-seed
results, how many met the target, mean and 95% CI.

    python benchmarks/learning_frozen_lake.py --map classic --minutes 10 --seeds 0 1 2 3 4 5 6 7 --parallel 2
    python benchmarks/learning_frozen_lake.py --map random --minutes 15
    python benchmarks/learning_frozen_lake.py --map random --minutes 45 --config smollm2.yaml \
        --scenario nonslip-4x4 --modes greedy        # the pretrained SmolLM2 preset with LoRA
"""

from __future__ import annotations

import argparse
import json
import os
import time

from common import add_seed_arguments, build_recipe, curve, evaluate_modes, path_arguments, study

from msgrpo.cli import config_path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", choices=["classic", "random"], default="classic")
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes (fixed seeds)")
    add_seed_arguments(parser)
    parser.add_argument(
        "--target", type=float, default=None,
        help="final success both modes must reach (default: 0.95 on the classic map, 0.5 on random maps)",
    )  # fmt: skip
    parser.add_argument("--out", default="runs/bench_frozen_lake")
    parser.add_argument("--config", action="append", default=[], help="overlay YAML (packaged name or path)")
    parser.add_argument("--scenario", default="train", help="evaluation scenario (train = the training game)")
    parser.add_argument("--modes", default="greedy,sampled", help="decoding modes to evaluate")
    parser.add_argument("overrides", nargs="*", help="extra recipe arguments, e.g. --model.optimizer.init_args.lr=3e-3")
    args = parser.parse_args(argv)
    metrics = ["final_success_rate", "final_success_rate_sampled", "iterations", "wall_s"]
    if (result := study(__file__, argv, args, metrics)) is not None:
        return result
    modes = args.modes.split(",")
    if unknown := set(modes) - {"greedy", "sampled"}:
        parser.error(f"unknown decoding mode(s) {sorted(unknown)}; use greedy and/or sampled")

    overlays = [f"--config={config_path(c) if os.sep not in c else c}" for c in args.config]
    extra = [*overlays, f"--data.eval_episodes={args.episodes}", f"--data.eval_scenarios=[{args.scenario}]"]
    extra.append(f"--data.game.init_args.map_name={'4x4' if args.map == 'classic' else 'null'}")
    cli = build_recipe(
        "frozen_lake.yaml",
        args.out,
        args.minutes,
        args.max_iterations,
        args.seeds[0],
        extra + args.overrides + path_arguments(args),
    )
    module, data = cli.model, cli.datamodule
    scenario = data.panel[0]
    initial = evaluate_modes(module, scenario, modes)
    print(f"initial: {json.dumps({k: v['success_rate'] for k, v in initial.items()})}", flush=True)
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    final = evaluate_modes(module, scenario, modes)
    result = {
        "seed": args.seeds[0],
        "map": args.map,
        "scenario": scenario.name,
        "iterations": len(module.history),
        "wall_s": round(wall, 1),
        "threads": __import__("torch").get_num_threads(),
    }
    for mode in modes:
        suffix = "" if mode == "greedy" else f"_{mode}"
        result[f"initial_success_rate{suffix}"] = initial[mode]["success_rate"]
        result[f"final_success_rate{suffix}"] = final[mode]["success_rate"]
        result[f"initial_invalid_action_rate{suffix}"] = initial[mode]["invalid_action_rate"]
        result[f"final_invalid_action_rate{suffix}"] = final[mode]["invalid_action_rate"]
        result[f"initial_return_mean{suffix}"] = round(initial[mode]["return_mean"], 3)
        result[f"final_return_mean{suffix}"] = round(final[mode]["return_mean"], 3)
    target = args.target if args.target is not None else (0.95 if args.map == "classic" else 0.5)
    result["target"] = target
    result["met_target"] = all(result[f"final_success_rate{'' if m == 'greedy' else '_' + m}"] >= target for m in modes)
    result.update(eval_episodes=args.episodes, train_rollout_success_curve=curve(module.history))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
