"""The one "small run" of the tests that check training mechanics (checkpoints, export, faults, strategies),
not learning: its CLI argument lists, and for tests that build their objects in Python, its ``Trainer``."""

import os
import signal
from pathlib import Path

import lightning as L

SMALL_ROLLOUT = ["--data.num_groups=2", "--data.group_size=2", "--data.sampler.init_args.num_episodes=2"]
"""2 groups of 2 episodes, 2 of them trained on."""

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

FAST_FIT = [
    "--trainer.accelerator=cpu",
    *QUIET,
    "--trainer.limit_val_batches=0",
    *SMALL_ROLLOUT,
    "--data.eval_episodes=2",
    "--data.game.init_args.fallback=random",
    # the untrained model's answers name no move, so the format penalty varies the returns from the first
    # iteration (constrained to the four moves, tiny rollouts often carry no signal at all: no update)
    "--model.policy.init_args.allowed_tokens=null",
    # the smallest tiny model (the recipe's may grow): these tests check mechanics, not learning speed
    "--model.policy.init_args.tiny.hidden_size=64",
    "--model.policy.init_args.tiny.intermediate_size=128",
]


def run_dir(root: Path | str) -> list[str]:
    """Arguments that put a run's checkpoints and logs under ``root`` (the logger's ``save_dir`` follows)."""
    return [f"--trainer.default_root_dir={root}"]


def plain_trainer(root: Path | str, **kwargs) -> L.Trainer:
    """The same quiet, small run for tests that build a ``Trainer`` in Python: no validation, logger, progress
    bar, model summary or checkpoints, under ``root``; ``kwargs`` (``max_epochs=...``) on top."""
    return L.Trainer(
        limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, enable_checkpointing=False, **kwargs,
    )  # fmt: skip


class SignalAt(L.Callback):
    """A callback (``--trainer.callbacks+=fast_fit.SignalAt``) that sends this process a signal when the
    given iteration starts, as a scheduler's SIGTERM would arrive mid-run."""

    def __init__(self, epoch: int = 1, signum: int = int(signal.SIGTERM)) -> None:
        self.epoch, self.signum = epoch, signum

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)
