"""Atomic checkpoint writes."""

import subprocess
import sys

import pytest
import torch

from msgrpo.callbacks import AtomicCheckpointIO, remove_stale_temporaries


def test_atomic_write_replaces_whole_file(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)
    io.save_checkpoint({"epoch": 2}, target)
    assert torch.load(target)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)

    def half_write(checkpoint, path):  # writes some bytes, then dies like a killed process
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", half_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["epoch"] == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_next_save_removes_temporaries_of_killed_writers(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".epoch=3-step=16.ckpt.tmp-{dead_pid}"
        in_progress = tmp_path / f".last.ckpt.tmp-{living.pid}"
        unrelated = tmp_path / ".notes.tmp-abc"  # not a pid: not ours to delete
        for path in (stale, in_progress, unrelated):
            path.write_bytes(b"partial")
        AtomicCheckpointIO().save_checkpoint({"epoch": 4}, tmp_path / "last.ckpt")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.ckpt", in_progress.name, unrelated.name])
    finally:
        living.kill()
        living.wait()


def test_stale_cleanup_of_a_missing_directory_is_a_no_op(tmp_path):
    assert remove_stale_temporaries(tmp_path / "absent") == []
