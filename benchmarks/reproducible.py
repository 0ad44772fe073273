"""What ``--reproducible`` costs, and the fingerprint to compare across machines.

Runs the Snake recipe (the main job's settings, seed 0) for ``--iterations`` iterations twice, each in its
own process, one after the other: natively and with ``--reproducible`` (``msgrpo.reproducible``: ATen's AVX2
kernels, MKL's compatible branch, 2 threads, deterministic algorithms). Prints one JSON line: seconds per
iteration of each (the mean over the iterations after the first, which pays for warm-up), their ratio, and
the reproducible run's fingerprint: ``loss/total`` and ``loss/entropy`` at the first and the last iteration,
to the digit. The same fingerprint on two machines means they computed the same run.

    python benchmarks/reproducible.py --iterations 12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from common import build_recipe
extra = ["--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"] + sys.argv[4:]
cli = build_recipe("snake.yaml", sys.argv[2], 60, int(sys.argv[3]), 0, extra)
ticks = []
import lightning as L
class Tick(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        ticks.append(time.perf_counter())
cli.trainer.callbacks.append(Tick())
start = time.perf_counter()
cli.trainer.fit(cli.model, datamodule=cli.datamodule)
rows = [h for h in cli.model.history if "loss/total" in h]
steps = [b - a for a, b in zip(ticks, ticks[1:])]
print(json.dumps({"s_per_iteration": sum(steps) / max(len(steps), 1), "iterations": len(cli.model.history),
                  "first": {k: rows[0][k] for k in ("iteration", "loss/total", "loss/entropy")},
                  "last": {k: rows[-1][k] for k in ("iteration", "loss/total", "loss/entropy")}}))
"""


def _run(iterations: int, extra: list[str], threads: int | None) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        env["MSGRPO_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, here, out, str(iterations), *extra],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="threads of the native run (the pinned one uses 2)")
    args = parser.parse_args(argv)
    native = _run(args.iterations, [], args.threads)
    pinned = _run(args.iterations, ["--reproducible=true"], None)
    result = {
        "iterations": args.iterations,
        "native_s_per_iteration": round(native["s_per_iteration"], 3),
        "reproducible_s_per_iteration": round(pinned["s_per_iteration"], 3),
        "slowdown": round(pinned["s_per_iteration"] / native["s_per_iteration"], 3),
        "fingerprint": {"first": pinned["first"], "last": pinned["last"]},
        "native_fingerprint": {"first": native["first"], "last": native["last"]},
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
