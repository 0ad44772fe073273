"""Fault tolerance: graceful stop on SIGTERM/SIGINT, atomic checkpoint writes."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

_TMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)")


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Deletes the temporary files (``.<name>.tmp-<pid>``) that writers killed mid-write left in
    ``directory``: a ``kill -9`` cannot run cleanup code, so the next save does it. Files of living
    writers are kept.

    Returns:
        The removed paths.
    """
    removed = []
    for path in directory.glob(".*.tmp-*") if directory.is_dir() else ():
        match = _TMP_NAME.fullmatch(path.name)
        if match is None or _alive(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same directory, fsyncs it, then renames it over
    the target, so a crash or ``kill -9`` mid-write never leaves a half-written file under the real name
    (``last.ckpt`` is always a complete checkpoint). A killed writer's temporary file (hidden,
    ``.<name>.tmp-<pid>``) is deleted by the next save into that directory."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target.parent)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


class GracefulShutdown(L.Callback):
    """On SIGTERM or SIGINT during ``fit``: finish the current iteration, save a resumable checkpoint
    (``<checkpoint dir>/last.ckpt``), and stop cleanly. A second signal aborts at once.

    The checkpoint is written when training ends (``on_train_end``), after every end-of-iteration hook has
    run (the module's learning-rate step and history row among them), so a resumed run continues exactly as
    the uninterrupted one, whatever the checkpoint cadence (every iteration, every n, or none). With
    several processes the stop is decided together: a signal to any rank stops every rank after the same
    iteration. Resume with ``fit --ckpt_path last`` (or the printed path); at most the interrupted
    iteration's remaining work is redone, nothing already checkpointed is lost.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self.stopping = False  # every rank agreed to stop after the current iteration
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:  # second signal: give up gracefulness
            self._restore()
            raise KeyboardInterrupt(f"{name} received twice")
        self.requested = name
        print(
            f"\nmsgrpo: {name} received: finishing this iteration, then saving a checkpoint "
            "(send it again to abort now).",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning registers its own SIGTERM handler, which would stop mid-iteration.
        self.requested, self.stopping = None, False
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (a collective: every rank asks, so a signal to one rank stops them all after this iteration)
        self.stopping = trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False)
        if self.stopping:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.stopping:
            return
        path = checkpoint_dir(trainer) / "last.ckpt"
        trainer.save_checkpoint(path)  # (every rank: a collective under DDP/FSDP)
        if trainer.is_global_zero:
            print(
                f"msgrpo: stopped after iteration {trainer.current_epoch} on {self.requested or 'a signal'}; "
                f"checkpoint {path}. Resume with: fit --ckpt_path last (same config and root dir)",
                file=sys.stderr,
                flush=True,
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """The checkpoint directory: the ModelCheckpoint's dirpath, else ``<default_root_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"
