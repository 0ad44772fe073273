"""Atomic checkpoint writes."""

import pytest
import torch

from msgrpo.callbacks import AtomicCheckpointIO


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
