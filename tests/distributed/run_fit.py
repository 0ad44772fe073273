"""Worker for the distributed tests: run a recipe's ``fit`` and write what each rank ended with.

Usage::

    python tests/distributed/run_fit.py OUT_DIR [--recipe frozen_lake] [recipe CLI arguments...]

Lightning's ``ddp`` launcher re-runs this script for every extra local rank, and ``torchrun`` runs it
once per process; every rank writes ``OUT_DIR/rank<global rank>.json`` with a hash of its final
parameters, its counts of model forward passes (generation vs training) and of backward passes, the
final metrics, the last evaluation, what a ``BestPolicy`` callback scored and chose, the returns of its
own last rollout, its times (``fit_s`` from the start of ``fit``, launching the other ranks included;
``train_s`` from ``on_fit_start``) and its peak RSS. Rank 0 also writes the full parameters to ``OUT_DIR/params.pt``.
"""

from __future__ import annotations

import os
import sys
import time

START = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faulthandler  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("MSGRPO_THREADS", "1")))

COUNTS = {"generate": 0, "train": 0, "backward": 0}
TIMES: dict[str, float] = {}
INITIAL: dict[str, str] = {}


def _count_forwards(module, args) -> None:
    if type(module).__name__.endswith("ForCausalLM"):
        COUNTS["train" if torch.is_grad_enabled() else "generate"] += 1


def full_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a plain CPU float32 tensor (sharded DTensors are gathered: collective)."""
    out = {}
    for name, p in model.named_parameters():
        t = p.detach()
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        out[name] = t.cpu().float().clone()
    return out


def digest(params: dict[str, torch.Tensor]) -> str:
    """sha256 over every parameter's name and values."""
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode())
        h.update(params[name].numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    if os.environ.get("MSGRPO_WORKER_TIMEOUT"):  # a hang prints every thread's stack and fails
        faulthandler.dump_traceback_later(float(os.environ["MSGRPO_WORKER_TIMEOUT"]), exit=True)
    out_dir = Path(sys.argv[1])
    args = sys.argv[2:]
    recipe = "frozen_lake"
    if args[:1] == ["--recipe"]:
        recipe, args = args[1], args[2:]
    module = importlib.import_module(f"msgrpo.recipes.{recipe}")
    torch.nn.modules.module.register_module_forward_pre_hook(_count_forwards)
    from msgrpo.module import MSGRPOModule

    on_fit_start = MSGRPOModule.on_fit_start

    def timed_fit_start(self) -> None:  # processes launched and joined, model set up: training starts
        INITIAL["sha256"] = digest(full_parameters(self.policy.model))
        TIMES["train_start"] = time.perf_counter()
        on_fit_start(self)

    MSGRPOModule.on_fit_start = timed_fit_start
    manual_backward = MSGRPOModule.manual_backward

    def counted_backward(self, loss, *a, **k) -> None:  # DDP all-reduces at every backward pass
        COUNTS["backward"] += 1
        manual_backward(self, loss, *a, **k)

    MSGRPOModule.manual_backward = counted_backward
    import_s = time.perf_counter() - START
    cli = module.main(["fit", *args])
    end = time.perf_counter()
    fit_s = end - START - import_s
    train_s = end - TIMES["train_start"]
    trainer = cli.trainer
    params = full_parameters(cli.model.policy.model)
    rank = trainer.global_rank
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        torch.save(params, out_dir / "params.pt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    from msgrpo.callbacks.selection import BestPolicy

    selectors = [c for c in trainer.callbacks if isinstance(c, BestPolicy)]
    selection = {"best_epoch": selectors[0].best_epoch, "scores": selectors[0].scores} if selectors else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "rank": rank,
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "param_sha256": digest(params),
        "initial_param_sha256": INITIAL["sha256"],
        "generate_forwards": COUNTS["generate"],
        "train_forwards": COUNTS["train"],
        "train_backwards": COUNTS["backward"],
        "fixed_generation_steps": cli.model.policy.lockstep,
        "rollbacks": cli.model.rollbacks,  # the run's totals (loss/* counters count the last iteration's)
        "skipped_updates": cli.model.guard.skipped,
        "metrics": metrics,
        "eval": cli.model.eval_results,
        "selection": selection,
        "local_returns": [e.total_reward for e in cli.datamodule.last_episodes],
        "import_s": import_s,
        "fit_s": fit_s,
        "train_s": train_s,
        "peak_rss_mb": rss,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    faulthandler.cancel_dump_traceback_later()
    if torch.distributed.is_initialized():  # an orderly shutdown: gloo threads left at exit can abort it
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
