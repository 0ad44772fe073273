"""Does the Snake recipe learn? Train the random-init tiny model, compare with reference policies.

Evaluates, on the Snake scenario panel (fixed seeds), the initial and the trained policy (greedy
decoding as ``initial``/``trained``, sampled at the policy temperature, seeded, as
``initial_sampled``/``trained_sampled``), a random policy and the greedy scripted policy (shortest safe
path to the nearest apple).
Prints one JSON line (last) with each policy's mean return and death rate per scenario; the death rate is
the fraction of episodes the learning snake did not survive (1 - success rate). ``margin_se`` gives, per
scenario, the trained (greedy) policy's mean return minus the random player's in standard errors of the
difference (the reference players need no model: they play the recipe's ``data.reference_episodes``,
1000 by default, per scenario, the model's seeds first, so their means are nearly exact and the margin's
standard error is mostly the trained policy's own); ``met_target`` is true when every scenario's margin is
at least ``--margin-se`` (3). With several ``--seeds`` each seed runs in its own process (``--parallel`` at
once) and the last line aggregates them.

The recipe ends ``fit`` with its best-validating policy (``msgrpo.callbacks.selection.BestPolicy``, from half of
``max_epochs`` on): pass ``--max-iterations`` (the main job: 200), or a run limited by ``--minutes`` alone
(up to 10,000 iterations) stops before its first validation and reports the live policy.

    python benchmarks/learning_snake.py --max-iterations 200 --minutes 30 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import time

from common import add_seed_arguments, build_recipe, curve, evaluate_modes, path_arguments, study

from msgrpo.components.games.snake import SnakeGreedy
from msgrpo.evaluation import margin_se, summarize
from msgrpo.players import RandomPolicy, play_reference


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
    add_seed_arguments(parser)
    parser.add_argument("--margin-se", type=float, default=3.0, help="required margin over random, in SE")
    parser.add_argument("--out", default="runs/bench_snake")
    parser.add_argument("overrides", nargs="*", help="extra recipe arguments")
    args = parser.parse_args(argv)
    metrics = ["min_margin_se", "trained_return_mean", "random_return_mean", "iterations", "wall_s"]
    if (result := study(__file__, argv, args, metrics)) is not None:
        return result
    seed = args.seeds[0]
    extra = [f"--data.eval_episodes={args.episodes}", f"--data.eval_scenarios=[{args.scenarios}]"]
    cli = build_recipe(
        "snake.yaml", args.out, args.minutes, args.max_iterations, seed, extra + args.overrides + path_arguments(args)
    )
    module, data = cli.model, cli.datamodule
    results: dict[str, dict[str, dict[str, float]]] = {
        "initial": {},
        "initial_sampled": {},
        "trained": {},
        "trained_sampled": {},
        "random": {},
        "greedy": {},
    }
    raw: dict[str, dict[str, dict[str, float]]] = {"trained": {}, "random": {}}  # unrounded, for the margins
    for scenario, many in zip(data.panel, data.reference_panel, strict=True):
        modes = evaluate_modes(module, scenario)
        results["initial"][scenario.name] = figures(modes["greedy"])
        results["initial_sampled"][scenario.name] = figures(modes["sampled"])
        for name, policy in (("random", RandomPolicy(seed=seed)), ("greedy", SnakeGreedy())):
            summary = summarize(play_reference(policy, many))
            raw.setdefault(name, {})[scenario.name] = summary
            results[name][scenario.name] = figures(summary)
    print(f"initial: {json.dumps(results['initial'])}", flush=True)
    print(f"initial, sampled: {json.dumps(results['initial_sampled'])}", flush=True)
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=data)
    wall = time.perf_counter() - start
    for scenario in data.panel:
        modes = evaluate_modes(module, scenario)
        raw["trained"][scenario.name] = modes["greedy"]
        results["trained"][scenario.name] = figures(modes["greedy"])
        results["trained_sampled"][scenario.name] = figures(modes["sampled"])

    def mean_over(policy: str, key: str) -> float:
        values = [v[key] for v in results[policy].values()]
        return round(sum(values) / len(values), 3)

    summary = {
        p: {"return_mean": mean_over(p, "return_mean"), "death_rate": mean_over(p, "death_rate")} for p in results
    }
    margins = {
        name: round(max(-99.0, min(99.0, margin_se(raw["trained"][name], raw["random"][name]))), 2)
        for name in raw["trained"]
    }
    out = {
        "seed": seed,
        "threads": __import__("torch").get_num_threads(),
        "iterations": len(module.history),
        "wall_s": round(wall, 1),
        "eval_episodes": args.episodes,
        "reference_episodes": len(data.reference_panel[0].seeds),
        "panel_mean": summary,
        "trained_beats_random": summary["trained"]["return_mean"] > summary["random"]["return_mean"],
        "trained_sampled_beats_random": summary["trained_sampled"]["return_mean"] > summary["random"]["return_mean"],
        "margin_se": margins,
        "min_margin_se": min(margins.values()),
        "met_target": all(m >= args.margin_se for m in margins.values()),
        "trained_return_mean": summary["trained"]["return_mean"],
        "random_return_mean": summary["random"]["return_mean"],
        "scenarios": results,
        "train_rollout_return_curve": curve(module.history, "rollout/return_mean"),
        "entropy_curve": curve(module.history, "loss/entropy"),
        "advantage_mean": round(
            sum(h.get("loss/advantage_mean", 0.0) for h in module.history) / max(len(module.history), 1), 4
        ),  # fmt: skip
        "selected_iteration": next(
            (h["select/best_iteration"] for h in reversed(module.history) if "select/best_iteration" in h), None
        ),  # fmt: skip
        "capability": __import__("torch").backends.cpu.get_cpu_capability(),
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
