"""Does the Snake recipe learn? Train the random-init tiny model, compare with reference policies.

Evaluates, on the Snake scenario panel (fixed seeds), the initial and the trained policy (greedy
decoding as ``initial``/``trained``, sampled at the policy temperature, seeded, as
``initial_sampled``/``trained_sampled``), a random policy and the greedy scripted policy (shortest safe
path to the nearest apple).
Prints one JSON line (last) with each policy's mean return and death rate per scenario; the death rate is
the fraction of episodes the learning snake did not survive (1 - success rate).

    python benchmarks/learning_snake.py --minutes 15
"""

from __future__ import annotations

import argparse
import json
import time

from common import build_recipe, curve, evaluate_modes

from msgrpo.evaluation import summarize
from msgrpo.reference import RandomPolicy, SnakeGreedy, play_reference


def figures(summary: dict[str, float]) -> dict[str, float]:
    return {
        "return_mean": round(summary["return_mean"], 3),
        "return_stderr": round(summary["return_stderr"], 3),
        "death_rate": round(1.0 - summary["success_rate"], 3),
        "invalid_action_rate": round(summary["invalid_action_rate"], 3),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    parser.add_argument("--max-iterations", type=int, default=10_000)
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per scenario")
    parser.add_argument("--scenarios", default="default-8,long-20,poison,two-opponents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_snake")
    parser.add_argument("overrides", nargs="*", help="extra recipe arguments")
    args = parser.parse_args(argv)

    extra = [f"--data.eval_episodes={args.episodes}", f"--data.eval_scenarios=[{args.scenarios}]"]
    cli = build_recipe("snake.yaml", args.out, args.minutes, args.max_iterations, args.seed, extra + args.overrides)
    module, data = cli.model, cli.datamodule
    results: dict[str, dict[str, dict[str, float]]] = {
        "initial": {},
        "initial_sampled": {},
        "trained": {},
        "trained_sampled": {},
        "random": {},
        "greedy": {},
    }
    for scenario in data.panel:
        modes = evaluate_modes(module, scenario)
        results["initial"][scenario.name] = figures(modes["greedy"])
        results["initial_sampled"][scenario.name] = figures(modes["sampled"])
        for name, policy in (("random", RandomPolicy(seed=args.seed)), ("greedy", SnakeGreedy())):
            results[name][scenario.name] = figures(summarize(play_reference(policy, scenario)))
    print(f"initial: {json.dumps(results['initial'])}", flush=True)
    print(f"initial, sampled: {json.dumps(results['initial_sampled'])}", flush=True)
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    for scenario in data.panel:
        modes = evaluate_modes(module, scenario)
        results["trained"][scenario.name] = figures(modes["greedy"])
        results["trained_sampled"][scenario.name] = figures(modes["sampled"])

    def mean_over(policy: str, key: str) -> float:
        values = [v[key] for v in results[policy].values()]
        return round(sum(values) / len(values), 3)

    summary = {
        p: {"return_mean": mean_over(p, "return_mean"), "death_rate": mean_over(p, "death_rate")} for p in results
    }
    out = {
        "iterations": len(module.history),
        "wall_s": round(wall, 1),
        "eval_episodes": args.episodes,
        "panel_mean": summary,
        "trained_beats_random": summary["trained"]["return_mean"] > summary["random"]["return_mean"],
        "trained_sampled_beats_random": summary["trained_sampled"]["return_mean"] > summary["random"]["return_mean"],
        "scenarios": results,
        "train_rollout_return_curve": curve(module.history, "rollout/return_mean"),
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
