"""How iteration time scales with group size and episode length (tiny model).

For every (group size G, Frozen Lake step limit T) on a grid, runs one MS-GRPO iteration: a lockstep
rollout of ``groups x G`` episodes, MS-GRPO credit (``EpisodeReturn``), one single-turn sample per step of
every episode (no episode sampler, so the number of step samples is the rollout's step count),
``minibatches`` under a token budget, then the training step's loop (``completion_logprobs``,
``MSGRPOLoss``, backward per micro-batch) and an AdamW step. A random-weight model names no valid action,
so every step takes the fallback move and every episode runs exactly T steps: ``step samples =
groups x G x T``.

Fits ``iteration_s = slope * step_samples + intercept`` by least squares and reports slope, intercept,
R^2 and the points (also the rollout and update parts' own fits). Each point is the fastest of
``--repeats`` iterations (the least disturbed on a shared machine). Prints one line per point, then one
JSON line (last).

    python benchmarks/scaling.py
    python benchmarks/scaling.py --group-sizes 2 4 8 16 --max-steps 2 4 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept`` and its R^2."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def iteration(policy, optimizer, game, seeds: list[int], group_size: int, token_budget: int, seed: int) -> dict:
    """One rollout + update; wall times of both parts and the number of step samples."""
    import torch

    from msgrpo.batching import minibatches, step_samples
    from msgrpo.components.credit import EpisodeReturn
    from msgrpo.loss import MSGRPOLoss
    from msgrpo.module import micro_batch_loss
    from msgrpo.rollout import play

    start = time.perf_counter()
    episodes = play(policy, game, seeds, group_size, generator=torch.Generator().manual_seed(seed))
    rollout_s = time.perf_counter() - start

    start = time.perf_counter()
    rewards = [e.rewards for e in episodes]
    group_ids = torch.tensor([e.group_id for e in episodes])
    advantages = EpisodeReturn().assign(rewards, group_ids)
    samples = step_samples(episodes, advantages, torch.arange(len(episodes)))
    gen = torch.Generator().manual_seed(seed)
    (batch,) = minibatches(samples, 1, token_budget, policy.tokenizer.pad_token_id, gen, dedupe=False)
    loss_fn = MSGRPOLoss()
    optimizer.zero_grad(set_to_none=True)
    for micro in batch.micro_batches:  # the loop of MSGRPOModule.training_step
        out, entropy = micro_batch_loss(policy, loss_fn, micro, batch)
        out.loss.backward()
        float(out.loss.detach()), float((entropy * micro.completion_mask).sum())
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    update_s = time.perf_counter() - start
    return {
        "episodes": len(episodes),
        "step_samples": len(samples),
        "micro_batches": len(batch.micro_batches),
        "rollout_s": rollout_s,
        "update_s": update_s,
        "iteration_s": rollout_s + update_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=4, help="groups per iteration (N)")
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[2, 4, 8], help="G values")
    parser.add_argument("--max-steps", type=int, nargs="+", default=[2, 4, 8], help="Frozen Lake step limits")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument(
        "--repeats", type=int, default=3, help="iterations per point (the fastest is reported: least disturbed)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine; 0: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from msgrpo.components.games import FrozenLake
    from msgrpo.policy import LanguagePolicy

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    policy = LanguagePolicy(max_new_tokens=args.max_new_tokens, seed=args.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    seeds = [3000 + args.seed * 100 + g for g in range(args.groups)]
    iteration(policy, optimizer, FrozenLake(max_steps=2), seeds[:1], 2, args.token_budget, args.seed)  # warm-up

    points = []
    for group_size in args.group_sizes:
        for max_steps in args.max_steps:
            game = FrozenLake(max_steps=max_steps)
            runs = [
                iteration(policy, optimizer, game, seeds, group_size, args.token_budget, args.seed + r)
                for r in range(args.repeats)
            ]
            point = {"group_size": group_size, "max_steps": max_steps, **runs[-1]}
            for key in ("rollout_s", "update_s", "iteration_s"):
                point[key] = round(min(r[key] for r in runs), 4)
            points.append(point)
            print(json.dumps(point), flush=True)

    xs = [float(p["step_samples"]) for p in points]
    result: dict = {"model": "tiny", "threads": torch.get_num_threads(), "groups": args.groups}
    for part in ("iteration", "rollout", "update"):
        fit = linear_fit(xs, [p[f"{part}_s"] for p in points])
        prefix = "" if part == "iteration" else f"{part}_"
        result[f"{prefix}slope_s_per_sample"] = round(fit["slope"], 6)
        result[f"{prefix}intercept_s"] = round(fit["intercept"], 4)
        result[f"{prefix}r2"] = round(fit["r2"], 4)
    result["points"] = points
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
