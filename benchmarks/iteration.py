"""One MS-GRPO iteration of a pretrained model: the previous path against the current one, side by side.

Trains a recipe (``--game frozen_lake``: random maps; ``--game snake``: the main job's games) with the SmolLM2
overlay (64 episodes an iteration, answers constrained to the moves, 32 episodes trained) for ``--iterations``
iterations after one warm-up iteration, twice in this process:

* ``before``: the path of 0.1.0 (every pass runs all 30 layers, ``cache_trunk=false``; Snake's full
  observation with the grid);
* ``after``: now (the frozen trunk runs once per micro-batch, :mod:`msgrpo.lm.trunk`; Snake's compact
  observation).

Prints each iteration's breakdown (rollout, frozen trunk, top layers' forward and backward, trust-region
measuring passes, rollbacks) and, last, one JSON line with the median seconds per iteration of each,
``speedup`` (before / after) and the peak RSS (``after`` runs first, so its ``peak_memory_mb`` is its own).

    python benchmarks/iteration.py --model smollm2 --game frozen_lake --iterations 2
    python benchmarks/iteration.py --model smollm2 --game snake --iterations 1 --warmup 0   # before: minutes
    python benchmarks/iteration.py --model tiny --iterations 2          # the same comparison, tiny model
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import build_recipe

BEFORE = ["--model.policy.init_args.cache_trunk=false"]  # every pass runs every layer
BEFORE_SNAKE = ["--data.game.init_args.observation=full"]  # the grid, the legend, every body cell


def run(
    variant: list[str],
    model: str,
    game: str,
    iterations: int,
    seed: int,
    out: str,
    overrides: list[str],
    warmup: int = 1,
) -> dict:
    if game == "snake":
        extra = ["--data.num_groups=4", "--data.group_size=16", "--model.policy.init_args.temperature=1.0"]
    else:
        extra = ["--data.game.init_args.map_name=null", "--model.policy.init_args.allowed_tokens=[left,down,right,up]"]
    # a small entropy bonus gives every update a gradient: zero-shot SmolLM2 never reaches a goal, every
    # advantage is 0, and an update with no signal is skipped (timing it needs it to run)
    extra += ["--data.sampler.init_args.num_episodes=32", "--model.loss.init_args.entropy_coef=0.001"]
    if model == "smollm2":
        extra = ["--config=" + __import__("msgrpo.cli", fromlist=["config_path"]).config_path("smollm2.yaml"), *extra]
    else:  # the same settings on the tiny model, an adapter on its top layer: checks the script
        extra += ["--model.policy.init_args.lora.r=8", "--model.policy.init_args.lora.layers=[-1]"]
    recipe = "snake.yaml" if game == "snake" else "frozen_lake.yaml"
    extra += ["--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"]  # (no validation games)
    cli = build_recipe(recipe, out, 600, iterations + warmup, seed, [*extra, *variant, *overrides])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    rows = cli.model.history[warmup:]  # a warm-up iteration pays for first-time allocations
    for row in rows:
        top = row["perf/update_s"] - row["perf/trunk_s"] - row["perf/measure_s"]
        print(
            f"  iteration {int(row['iteration'])}: rollout {row['perf/rollout_s']:.1f} s, frozen trunk "
            f"{row['perf/trunk_s']:.1f} s, top layers {top:.1f} s, measuring passes {row['perf/measure_s']:.1f} s, "
            f"{row.get('loss/rollbacks', 0):.0f} rollbacks",
            flush=True,
        )
    total = [r["perf/rollout_s"] + r["perf/update_s"] for r in rows]

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 2)

    return {
        "iteration_s": round(statistics.median(total), 2),
        "rollout_s": median("perf/rollout_s"),
        "update_s": median("perf/update_s"),
        "trunk_s": median("perf/trunk_s"),
        "measure_s": median("perf/measure_s"),
        "rollbacks": median("loss/rollbacks"),
        "update_tokens_per_s": round(statistics.median(r["perf/tokens_per_s"] for r in rows), 1),
        "iterations": len(rows),
        # the process's peak RSS so far: "after" runs first, so its figure is its own
        "peak_memory_mb": round(rows[-1]["perf/peak_memory_mb"]),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--game", choices=["frozen_lake", "snake"], default="frozen_lake")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations of each (after the warm-up)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed iterations first (0: the first is timed, warm-up included)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_iteration")
    parser.add_argument("overrides", nargs="*", help="after --: recipe arguments for both settings")
    args = parser.parse_args(argv)
    result = {"model": args.model, "game": args.game, "warmup": args.warmup}
    before = BEFORE + (BEFORE_SNAKE if args.game == "snake" else [])
    for name, variant in (("after", []), ("before", before)):  # after first: its peak memory is its own
        print(f"{name}:", flush=True)
        out = f"{args.out}/{name}"
        result[name] = run(variant, args.model, args.game, args.iterations, args.seed, out, args.overrides, args.warmup)
    result["speedup"] = round(result["before"]["iteration_s"] / max(result["after"]["iteration_s"], 1e-9), 2)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
