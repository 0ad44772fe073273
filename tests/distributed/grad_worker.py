"""Worker of ``test_ddp_gradient.py``: the gradient of 2 data-parallel ranks vs one process.

Usage: ``python grad_worker.py OUT_DIR``. Spawns 2 gloo processes; each takes its share of 13 fixed step
samples (7 and 6: the ranks hold different token counts), pads its micro-batches to the other rank's count
with blank ones (as ``RolloutDataModule`` does), normalises with
:func:`msgrpo.module.data_parallel_normalisers`, backpropagates and averages the gradients over the ranks
(what DDP does). Rank 0 also computes the single-process gradient of all 13 samples; it writes both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_grad_accumulation import _samples  # noqa: E402

from msgrpo.batching import minibatches  # noqa: E402
from msgrpo.loss import MSGRPOLoss  # noqa: E402
from msgrpo.module import data_parallel_normalisers, micro_batch_loss  # noqa: E402
from msgrpo.policy import LanguagePolicy  # noqa: E402
from msgrpo.types import MicroBatch  # noqa: E402

LOSSES = {
    "token-mean": MSGRPOLoss(),
    "sequence-mean": MSGRPOLoss(aggregation="sequence-mean"),
    "kl": MSGRPOLoss(kl_coef=0.5),
}


def _grads(policy, loss, mini, normalisers=None):
    policy.zero_grad(set_to_none=True)
    for micro in mini.micro_batches:
        out, _ = micro_batch_loss(policy, loss, micro, mini, normalisers)
        out.loss.backward()
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


def _run(rank: int, world: int, out: str, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    policy = LanguagePolicy(max_new_tokens=6, temperature=0.8, share_prefill=False)
    policy.train()
    samples = _samples(policy, n=13)
    pad = policy.tokenizer.pad_token_id
    budget = 3 * max(s.num_tokens for s in samples)  # several micro-batches per rank
    results = {}
    for name, loss in LOSSES.items():
        mine = minibatches(samples[rank::world], 1, budget, pad, torch.Generator().manual_seed(0))[0]
        count = torch.tensor(len(mine.micro_batches))
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        while len(mine.micro_batches) < int(count):
            mine.micro_batches.append(MicroBatch.blank(pad))

        def reduce_sum(t):
            dist.all_reduce(t)
            return t

        grads = _grads(policy, loss, mine, data_parallel_normalisers(mine, world, reduce_sum))
        for g in grads.values():
            dist.all_reduce(g)
            g /= world
        results[name] = {"ranks": grads}
        if rank == 0:
            whole = minibatches(samples, 1, budget, pad, torch.Generator().manual_seed(0))[0]
            results[name]["single"] = _grads(policy, loss, whole)
            results[name]["tokens"] = (mine.num_tokens, whole.num_tokens)
    if rank == 0:
        torch.save(results, Path(out) / "grads.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
    mp.spawn(_run, args=(2, sys.argv[1], free), nprocs=2, join=True)
