"""Signals really sent to a training subprocess; resume from what it left behind."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from fast_fit import QUIET, SMALL_ROLLOUT, run_dir

from msgrpo.recipes import frozen_lake


def _cmd(root, epochs, *extra):
    return [
        sys.executable, "-m", "msgrpo.recipes.frozen_lake", "fit", f"--trainer.max_epochs={epochs}",
        *QUIET, "--trainer.limit_val_batches=0", *run_dir(root), *SMALL_ROLLOUT, *extra,
    ]  # fmt: skip


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _saved_epoch(path):
    return torch.load(path, map_location="cpu", weights_only=False)["epoch"]


def _wait_for_checkpoint(proc, path, min_epoch, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                if _saved_epoch(path) >= min_epoch:
                    return
            except Exception:  # being replaced right now: try again
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no checkpoint in time")


def _epochs_logged(root):
    epochs = set()
    for f in root.rglob("metrics.csv"):
        with open(f) as handle:
            epochs |= {int(r["epoch"]) for r in csv.DictReader(handle) if r.get("rollout/return_mean")}
    return epochs


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_resumable_checkpoint(tmp_path, signum):
    last = tmp_path / "checkpoints" / "last.ckpt"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as handle:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(_cmd(tmp_path, 500), env=_env(), stdout=subprocess.DEVNULL, stderr=handle)
        _wait_for_checkpoint(proc, last, min_epoch=1)
        proc.send_signal(signum)
        proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 0, err[-2000:]
    assert f"{signal.Signals(signum).name} received" in err and "Resume with" in err
    stopped = _saved_epoch(last)
    assert stopped >= 1
    assert "Traceback" not in err
    # resume: continues with the next iteration, nothing already checkpointed is redone
    done = subprocess.run(_cmd(tmp_path, stopped + 3, "--ckpt_path=last"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _saved_epoch(last) == stopped + 2
    assert _epochs_logged(tmp_path) == set(range(stopped + 3))


@pytest.mark.slow
def test_kill_9_loses_at_most_the_current_iteration(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_cmd(tmp_path, 500), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(proc, last, min_epoch=2)
    proc.kill()
    proc.wait(timeout=30)
    saved = _saved_epoch(last)  # the file is complete (atomic writes): it loads
    assert saved >= 2
    # A kill that lands mid-write can leave the writer's hidden temporary file, never a real name.
    others = [p.name for p in last.parent.iterdir() if p.suffix != ".ckpt"]
    assert all(re.fullmatch(rf"\..+\.ckpt\.tmp-{proc.pid}", name) for name in others), others
    done = subprocess.run(_cmd(tmp_path, saved + 2, "--ckpt_path=last"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _saved_epoch(last) == saved + 1
    assert not [p for p in last.parent.iterdir() if p.suffix != ".ckpt"]  # the resumed run removed them


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path):
    def run(root):
        cli = frozen_lake.main([
            "fit", "--trainer.max_epochs=2", *QUIET, "--trainer.limit_val_batches=0", *run_dir(root),
            *SMALL_ROLLOUT, "--data.game.init_args.map_name=null",
            "--model.loss.init_args.entropy_coef=0.01",  # every update has a gradient
        ])  # fmt: skip
        return [{k: v for k, v in h.items() if not k.startswith("perf/")} for h in cli.model.history]

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first == second
    assert "rollout/return_mean" in first[-1] and "loss/policy" in first[-1]
