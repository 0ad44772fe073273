"""One MS-GRPO iteration of a pretrained model: the previous settings against the current ones, side by side.

Trains Frozen Lake (random maps, 64 episodes an iteration, answers constrained to the four moves, 32
episodes trained) for ``--iterations`` iterations after one warm-up iteration, twice in this process:

* ``before``: the SmolLM2 overlay as it was (LoRA r=16 on every layer, gradient checkpointing, 2,048-token
  micro-batches, 8 groups x 8 episodes, the think-then-act answer instruction, no trust region);
* ``after``: ``smollm2.yaml`` now (LoRA on the top 8 layers, no checkpointing, 8,192-token micro-batches,
  4 groups x 16 episodes, the action-only instruction, the recipe's trust region).

Prints each iteration's time breakdown (rollout, update, tokens) and, last, one JSON line with the median
seconds per iteration of each, ``speedup`` (before / after) and the peak RSS (``after`` runs first, so its
``peak_memory_mb`` is its own; ``before``'s is the larger of the two).

    python benchmarks/iteration.py --model smollm2 --iterations 3
    python benchmarks/iteration.py --model tiny --iterations 2          # the same comparison, tiny model
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import build_recipe

BEFORE = [
    # every one of SmolLM2-135M's 30 decoder layers (the former default, lora.layers unset)
    "--model.policy.init_args.lora.layers=[" + ",".join(map(str, range(30))) + "]",
    "--model.policy.init_args.gradient_checkpointing=true",
    "--model.policy.init_args.temperature=1.0",
    "--data.token_budget=2048",
    "--data.num_groups=8",
    "--data.group_size=8",
    "--data.game.init_args.answer_format=think",
    "--model.rollback_kl=null",
    "--model.optimizer.init_args.lr=0.0005",
]


def run(variant: list[str], model: str, iterations: int, seed: int, out: str, overrides: list[str]) -> dict:
    extra = ["--data.game.init_args.map_name=null", "--model.policy.init_args.allowed_tokens=[left,down,right,up]"]
    # a small entropy bonus gives every update a gradient: zero-shot SmolLM2 never reaches a goal, every
    # advantage is 0, and an update with no signal is skipped (timing it needs it to run)
    extra += ["--data.sampler.init_args.num_episodes=32", "--model.loss.init_args.entropy_coef=0.001"]
    if model == "smollm2":
        extra = ["--config=" + __import__("msgrpo.cli", fromlist=["config_path"]).config_path("smollm2.yaml"), *extra]
    else:  # the same settings on the tiny model (no LoRA layers to choose): checks the script
        extra += ["--model.policy.init_args.lora.r=8"]
        variant = [v for v in variant if "lora.layers" not in v]
    cli = build_recipe("frozen_lake.yaml", out, 600, iterations + 1, seed, [*extra, *variant, *overrides])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    rows = cli.model.history[1:]  # the first iteration pays for warm-up
    for row in rows:
        print(
            f"  iteration {int(row['iteration'])}: rollout {row['perf/rollout_s']:.1f} s, update "
            f"{row['perf/update_s']:.1f} s, {row.get('loss/rollbacks', 0):.0f} rollbacks so far",
            flush=True,
        )
    total = [r["perf/rollout_s"] + r["perf/update_s"] for r in rows]
    return {
        "iteration_s": round(statistics.median(total), 2),
        "rollout_s": round(statistics.median(r["perf/rollout_s"] for r in rows), 2),
        "update_s": round(statistics.median(r["perf/update_s"] for r in rows), 2),
        "update_tokens_per_s": round(statistics.median(r["perf/tokens_per_s"] for r in rows), 1),
        "iterations": len(rows),
        # the process's peak RSS so far: "after" runs first, so its figure is its own
        "peak_memory_mb": round(rows[-1]["perf/peak_memory_mb"]),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations of each (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_iteration")
    parser.add_argument("overrides", nargs="*", help="after --: recipe arguments for both settings")
    args = parser.parse_args(argv)
    result = {"model": args.model}
    for name, variant in (("after", []), ("before", BEFORE)):  # after first: its peak memory is its own
        print(f"{name}:", flush=True)
        result[name] = run(variant, args.model, args.iterations, args.seed, f"{args.out}/{name}", args.overrides)
    result["speedup"] = round(result["before"]["iteration_s"] / max(result["after"]["iteration_s"], 1e-9), 2)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
