"""Update speed: the training step's real path against a bare forward+backward over the same tokens.

Rolls out Frozen Lake (or, ``--game snake``, Snake) episodes with the policy to get real step samples
(prompt ids, completion ids, rollout log-probs; random advantages), then times one optimisation pass over
them two ways:

* ``real``: what ``MSGRPOModule.training_step`` does for a mini-batch: ``minibatches`` (shuffle,
  length bucketing, token-budget packing, ``collate`` padding), then per micro-batch
  ``LanguagePolicy.completion_logprobs`` (logits at completion positions only, entropy),
  ``MSGRPOLoss`` with the mini-batch normalisers, ``backward`` (gradients accumulate), and the
  per-micro-batch diagnostics the module reads.
* ``bare``: the same tokens concatenated and cut into rows of equal length (no padding, no masks),
  in micro-batches of the same token budget, a plain model forward keeping as many logit positions
  per row as the real path's share of completion tokens, a cross-entropy loss, ``backward``.

A third pass, ``deduped``, is the training step's default: the ``real`` path with identical sequences
(episodes of a group in the same state choosing the same move) computed once; ``dedupe_speedup`` is
``real_s / deduped_s`` on the same samples. A fourth, ``unshared``, is the ``real`` path with
``share_prefill`` off, so every row runs its whole prompt, including the prefix all rows share (system
message, fixed start of the observation), which ``real`` runs once per micro-batch;
``prefix_sharing_speedup`` is ``unshared_s / real_s`` and ``ratio_unshared`` the ``ratio`` of that pass
(the padding and bookkeeping overhead alone, as the bare pass runs every token). None includes the
optimizer step.
``ratio = real tokens/s / bare tokens/s`` where tokens are real
(unpadded) prompt + completion tokens; each pass runs ``--repeats`` times, interleaved, and the fastest
of each is reported (the least disturbed on a shared machine). Prints progress lines, then one JSON line (last).

    python benchmarks/update.py
    python benchmarks/update.py --model 10m
    python benchmarks/update.py --game snake --max-new-tokens 1
    python benchmarks/update.py --game snake --mixture --max-new-tokens 1 --groups 8

``--mixture`` (Snake) plays a mixture of scenarios, one per group, and adds a fifth pass, ``ungrouped``:
the ``deduped`` path with every sample in one prefix group, so micro-batches mix games (packed by length
alone) and share only the prefix common to all games; ``prefix_group_speedup`` is
``ungrouped_s / deduped_s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = {
    "tiny": {},
    "10m": {"hidden_size": 256, "num_layers": 8, "num_heads": 8, "intermediate_size": 1024},
}


MIXTURE = ["train", "poison", "train", "two-opponents"]  # Snake scenarios, one per group in turn


def make_samples(
    policy, groups: int, group_size: int, seed: int, game: str = "frozen_lake", mixture: bool = False
) -> list:
    """Step samples of a Frozen Lake (or Snake) rollout, with standard-normal advantages.

    ``mixture``: Snake groups cycle through :data:`MIXTURE` (a ``data.train_scenarios`` mixture); each
    sample keeps its game as its :attr:`~msgrpo.types.StepSample.prefix_group`.
    """
    import torch

    from msgrpo.components.games import FrozenLake, Snake
    from msgrpo.rollout import play
    from msgrpo.types import StepSample

    if mixture:
        scenarios = Snake(fallback="random").scenarios()
        played = [scenarios[MIXTURE[g % len(MIXTURE)]] for g in range(groups)]
    else:
        played = FrozenLake(max_steps=8) if game == "frozen_lake" else Snake(fallback="random")
    episodes = play(
        policy, played, [2000 + g for g in range(groups)], group_size, generator=torch.Generator().manual_seed(seed)
    )
    steps = [(s, e.game) for e in episodes for s in e.steps if s.completion_ids.numel() > 0]
    advantages = torch.randn(len(steps), generator=torch.Generator().manual_seed(seed)).tolist()
    return [
        StepSample(s.prompt_ids, s.completion_ids, s.logprobs, a, prefix_group=g)
        for (s, g), a in zip(steps, advantages)
    ]


def real_pass(
    policy, loss_fn, samples: list, token_budget: int, seed: int, dedupe: bool = False, share: bool = True
) -> tuple[int, int]:
    """One mini-batch through the training step's path (see the module docstring).

    Returns:
        ``(real tokens, micro-batches)``.
    """
    import torch

    from msgrpo.batching import minibatches
    from msgrpo.module import micro_batch_loss

    policy.share_prefill = share
    policy.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(seed)
    (batch,) = minibatches(samples, 1, token_budget, policy.tokenizer.pad_token_id, gen, dedupe=dedupe)
    sums = dict.fromkeys(("loss", "policy", "kl", "clip_frac", "approx_kl", "ratio", "entropy"), 0.0)
    for micro in batch.micro_batches:  # the loop of MSGRPOModule.training_step
        out, entropy = micro_batch_loss(policy, loss_fn, micro, batch)
        out.loss.backward()
        n = int(micro.completion_mask.sum())
        sums["loss"] += float(out.loss.detach())
        sums["policy"] += float(out.policy_loss)
        for key, value in (("kl", out.kl), ("clip_frac", out.clip_frac), ("approx_kl", out.approx_kl)):
            sums[key] += float(value) * n
        sums["ratio"] += float(out.ratio_mean) * n
        sums["entropy"] += float((entropy * micro.completion_mask).sum())
    tokens = int(sum(int(m.attention_mask.sum()) for m in batch.micro_batches))  # computed (distinct) tokens
    return tokens, len(batch.micro_batches)


def packed_rows(samples: list, row_len: int):
    """All samples' tokens concatenated and cut into ``[R, row_len]`` (the remainder is dropped)."""
    import torch

    stream = torch.cat([torch.cat([s.prompt_ids, s.completion_ids]) for s in samples])
    rows = stream.numel() // row_len
    return stream[: rows * row_len].view(rows, row_len)


def bare_pass(model, rows, token_budget: int, keep: int) -> tuple[int, int]:
    """Forward + cross-entropy + backward over packed rows in token-budget micro-batches.

    Returns:
        ``(tokens, micro-batches)``.
    """
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    per_micro = max(1, token_budget // rows.shape[1])
    n_targets = rows.shape[0] * (keep - 1)
    micro = 0
    for chunk in rows.split(per_micro):
        logits = model(input_ids=chunk, logits_to_keep=keep, use_cache=False).logits[:, :-1].float()
        targets = chunk[:, -(keep - 1) :]  # [b, keep - 1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        (loss / n_targets).backward()
        micro += 1
    return rows.numel(), micro


def timed(fns: dict, repeats: int) -> dict[str, tuple[float, tuple]]:
    """Fastest of ``repeats`` calls of each function (least disturbed on a shared machine), calls
    interleaved, after one warm-up call each; with the last call's result."""
    out = {name: (float("inf"), fn()) for name, fn in fns.items()}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn()
            out[name] = (min(out[name][0], time.perf_counter() - start), result)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--game", choices=["frozen_lake", "snake"], default="frozen_lake")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="completion length limit of the rollout")
    parser.add_argument("--token-budget", type=int, default=16384, help="padded tokens per micro-batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each kind (fastest reported)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine; 0: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixture", action="store_true", help="Snake: one scenario per group, in turn (see MIXTURE)")
    args = parser.parse_args(argv)
    if args.mixture and args.game != "snake":
        parser.error("--mixture is a mixture of Snake scenarios: add --game snake")

    import torch

    from msgrpo.lm.models import TinySettings
    from msgrpo.loss import MSGRPOLoss
    from msgrpo.policy import LanguagePolicy

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    policy = LanguagePolicy(max_new_tokens=args.max_new_tokens, seed=args.seed, tiny=TinySettings(**MODELS[args.model]))
    params = sum(p.numel() for p in policy.parameters())
    print(f"model {args.model}: {params / 1e6:.2f}M parameters, {torch.get_num_threads()} threads", flush=True)
    samples = make_samples(policy, args.groups, args.group_size, args.seed, args.game, args.mixture)
    policy.train()
    loss_fn = MSGRPOLoss()

    completion_tokens = sum(s.completion_ids.numel() for s in samples)
    total_tokens = sum(s.num_tokens for s in samples)
    row_len = max(s.num_tokens for s in samples)
    keep = max(1, round(row_len * completion_tokens / total_tokens)) + 1  # the real path keeps C + 1
    rows = packed_rows(samples, row_len)
    passes = {
        "real": lambda: real_pass(policy, loss_fn, samples, args.token_budget, args.seed),
        "bare": lambda: bare_pass(policy.model, rows, args.token_budget, keep),
        "deduped": lambda: real_pass(policy, loss_fn, samples, args.token_budget, args.seed, dedupe=True),
        "unshared": lambda: real_pass(policy, loss_fn, samples, args.token_budget, args.seed, share=False),
    }
    if args.mixture:
        ungrouped = [dataclasses.replace(s, prefix_group=0) for s in samples]
        passes["ungrouped"] = lambda: real_pass(policy, loss_fn, ungrouped, args.token_budget, args.seed, dedupe=True)
    times = timed(passes, args.repeats)
    real_s, (real_tokens, real_micro) = times["real"]
    bare_s, (bare_tokens, bare_micro) = times["bare"]
    dedupe_s, (dedupe_tokens, _) = times["deduped"]
    unshared_s = times["unshared"][0]
    policy.share_prefill = True
    print(f"real: {real_tokens} tokens in {real_micro} micro-batches, {real_s:.3f} s", flush=True)
    print(f"bare: {bare_tokens} tokens in {bare_micro} micro-batches, {bare_s:.3f} s", flush=True)

    from msgrpo.batching import pack_by_budget

    padded = sum(
        len(g) * (max(s.prompt_ids.numel() for s in g) + max(s.completion_ids.numel() for s in g))
        for g in pack_by_budget(samples, args.token_budget, dedupe=False)
    )
    real_tps = real_tokens / max(real_s, 1e-9)
    bare_tps = bare_tokens / max(bare_s, 1e-9)
    result = {
        "model": args.model,
        "game": args.game,
        "parameters": params,
        "threads": torch.get_num_threads(),
        "samples": len(samples),
        "prompt_tokens_mean": round((total_tokens - completion_tokens) / len(samples), 1),
        "completion_tokens_mean": round(completion_tokens / len(samples), 1),
        "token_budget": args.token_budget,
        "real_tokens": real_tokens,
        "real_micro_batches": real_micro,
        "real_padding_fraction": round(1 - total_tokens / padded, 4),
        "real_s": round(real_s, 4),
        "real_tokens_per_s": round(real_tps, 1),
        "bare_tokens": bare_tokens,
        "bare_micro_batches": bare_micro,
        "bare_row_len": row_len,
        "bare_logits_kept_per_row": keep,
        "bare_s": round(bare_s, 4),
        "bare_tokens_per_s": round(bare_tps, 1),
        "ratio": round(real_tps / max(bare_tps, 1e-9), 3),
        # the training step's default: identical sequences computed once (same samples, same loss)
        "deduped_tokens_computed": dedupe_tokens,
        "deduped_s": round(dedupe_s, 4),
        "dedupe_speedup": round(real_s / max(dedupe_s, 1e-9), 2),
        # every row running its whole prompt (share_prefill off) against the shared prefix run once
        "unshared_s": round(unshared_s, 4),
        "ratio_unshared": round(real_tokens / max(unshared_s, 1e-9) / max(bare_tps, 1e-9), 3),
        "prefix_sharing_speedup": round(unshared_s / max(real_s, 1e-9), 2),
    }
    if args.mixture:  # a mixture's micro-batches by game against micro-batches mixing games
        result["mixture"] = MIXTURE
        result["games"] = len({s.prefix_group for s in samples})
        result["ungrouped_s"] = round(times["ungrouped"][0], 4)
        result["prefix_group_speedup"] = round(times["ungrouped"][0] / max(dedupe_s, 1e-9), 2)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
