"""A run stopped by SIGTERM and resumed gives the uninterrupted run's weights, learning rate and history
exactly, whatever the checkpoint cadence (every iteration, every 2, none)."""

from __future__ import annotations

import pytest
import torch
from fast_fit import FAST_FIT, run_dir

from msgrpo.recipes import frozen_lake

SCHEDULE = [  # the learning rate changes every iteration: a schedule one step behind shows
    "--model.lr_scheduler=torch.optim.lr_scheduler.LinearLR",
    "--model.lr_scheduler.init_args.start_factor=1.0",
    "--model.lr_scheduler.init_args.end_factor=0.1",
    "--model.lr_scheduler.init_args.total_iters=4",
    "--model.optimizer.init_args.lr=0.01",
]
CADENCE = {
    "every-iteration": [],
    "every-2": ["--trainer.callbacks.init_args.every_n_epochs=2"],
    "off": ["--trainer.enable_checkpointing=false"],
}


def _fit(root, epochs: int, *extra: str):
    return frozen_lake.main(["fit", *FAST_FIT, *SCHEDULE, f"--trainer.max_epochs={epochs}", *run_dir(root), *extra])


def _lr(cli) -> float:
    return cli.model.optimizers().param_groups[0]["lr"]


@pytest.mark.slow
@pytest.mark.parametrize("cadence", list(CADENCE))
def test_sigterm_stop_and_resume_is_the_straight_run(tmp_path, cadence):
    straight = _fit(tmp_path / "straight", 4, *CADENCE[cadence])
    root = tmp_path / "split"
    stopped = _fit(root, 4, *CADENCE[cadence], "--trainer.callbacks+=fast_fit.SignalAt",
                   "--trainer.callbacks.epoch=1")  # fmt: skip
    assert stopped.trainer.current_epoch == 2  # finished iteration 1 (0-based), then stopped
    ckpt = root / "checkpoints" / "last.ckpt"
    resumed = _fit(root, 4, *CADENCE[cadence], f"--ckpt_path={ckpt}")
    assert [h["iteration"] for h in straight.model.history] == [0, 1, 2, 3]
    assert [h["iteration"] for h in resumed.model.history] == [0, 1, 2, 3]
    assert _lr(resumed) == _lr(straight)
    for (name, a), b in zip(straight.model.policy.named_parameters(), resumed.model.policy.parameters()):
        assert torch.equal(a, b), name
    moved = zip(straight.model.policy.parameters(), stopped.model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in moved)  # the stop really came before the end
