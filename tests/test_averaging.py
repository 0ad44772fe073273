"""PolicyAveraging: the mean of the end-of-iteration weights; training untouched; checkpoints and resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fast_fit import FAST_FIT, run_dir

from msgrpo.callbacks.averaging import LIVE_KEY, PolicyAveraging
from msgrpo.errors import ConfigError
from msgrpo.recipes import frozen_lake

# Weight decay off: the weights move through gradients only. An evaluation after every iteration, so the
# average is swapped in and out while training goes on.
FAST = [
    *FAST_FIT,
    "--model.optimizer.init_args.weight_decay=0",
    "--trainer.limit_val_batches=1.0",
    "--trainer.check_val_every_n_epoch=1",
    "--data.eval_scenarios=[train]",
]
AVERAGE = ["--trainer.callbacks+=msgrpo.callbacks.averaging.PolicyAveraging", "--trainer.callbacks.start=0.5"]
RECORD = ["--trainer.callbacks+=test_averaging.Recorder"]


class Recorder(L.Callback):
    """Keeps a copy of the live trainable weights at the end of every iteration."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.weights.append({n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad})


class StopAfter(L.Callback):
    """Stops ``fit`` after iteration ``epoch`` (0-based), the checkpoint of that iteration written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _fit(root, *extra: str):
    return frozen_lake.main(["fit", *FAST, "--trainer.max_epochs=4", *run_dir(root), *extra])


def _callback(cli, kind):
    return next(c for c in cli.trainer.callbacks if isinstance(c, kind))


def _weights(cli) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in cli.model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_the_model_ends_with_the_mean_of_the_last_iterations_and_training_is_untouched(tmp_path):
    plain = _fit(tmp_path / "plain", *RECORD)
    averaged = _fit(tmp_path / "averaged", *RECORD, *AVERAGE)
    live, live_plain = _callback(averaged, Recorder).weights, _callback(plain, Recorder).weights
    assert len(live) == len(live_plain) == 4
    # training is the same run, bit for bit, though every evaluation swapped the average in and out
    for ours, theirs in zip(live, live_plain, strict=True):
        for name in theirs:
            assert torch.equal(ours[name], theirs[name]), name
    evaluated = [row["iteration"] for row in averaged.model.history if "eval/train/success_rate" in row]
    assert evaluated == [0.0, 1.0, 2.0, 3.0]  # evaluations ran while the average existed (iterations 1-3)
    checked = [row["loss/onpolicy_error"] for row in averaged.model.history if "loss/onpolicy_error" in row]
    assert checked and max(checked) < 1e-4  # ratio 1 at every iteration's first update
    # start 0.5 of 4 iterations: the policies after iterations 2, 3 and 4 (1-based), averaged by hand
    assert _callback(averaged, PolicyAveraging).first_epoch(averaged.trainer) == 1
    assert _callback(averaged, PolicyAveraging).count == 3
    final = _weights(averaged)
    moved = [n for n in final if not torch.equal(live[2][n], live[3][n])]
    assert moved  # the weights moved between the averaged iterations: the mean is not one of them
    for name in final:
        mean = (live[1][name] + live[2][name] + live[3][name]) / 3
        torch.testing.assert_close(final[name], mean, atol=1e-6, rtol=0)  # (a running mean: float error)
    assert any(not torch.equal(final[n], live[3][n]) for n in moved)
    # last.ckpt: the average under state_dict (what replay and export load), the live weights beside it
    state = torch.load(tmp_path / "averaged" / "checkpoints" / "last.ckpt", weights_only=False)
    for name in final:
        torch.testing.assert_close(state["state_dict"][name], final[name], atol=1e-7, rtol=0)
        assert torch.equal(state[LIVE_KEY][name], live[3][name])


@pytest.mark.slow
def test_an_evaluation_inside_an_iteration_never_counts_half_updated_weights(tmp_path):
    # two mini-batches and an evaluation after each: the mid-iteration evaluation must not count the weights
    # of the half-updated policy, nor mark the iteration counted (its end-of-iteration weights would be lost)
    inside = ["--data.num_minibatches=2", "--trainer.val_check_interval=0.5"]
    cli = _fit(tmp_path, *RECORD, *AVERAGE, *inside)
    live = _callback(cli, Recorder).weights
    assert _callback(cli, PolicyAveraging).count == 3
    final = _weights(cli)
    for name in final:
        mean = (live[1][name] + live[2][name] + live[3][name]) / 3
        torch.testing.assert_close(final[name], mean, atol=1e-6, rtol=0)  # (a running mean: float error)


def test_same_start_convention_as_best_policy():
    from msgrpo.callbacks.averaging import window_start
    from msgrpo.callbacks.selection import BestPolicy

    for epochs, start, first in [(200, 0.75, 149), (200, 0.5, 99), (4, 0.5, 1), (3, 0.5, 1), (10, 0.0, 0)]:
        trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False)
        assert window_start(trainer, start, "x") == first
        assert PolicyAveraging(start=start).first_epoch(trainer) == first
        assert BestPolicy(start=start).first_epoch(trainer) == first


@pytest.mark.slow
def test_resume_in_the_middle_of_the_average_matches_the_straight_run(tmp_path):
    straight = _fit(tmp_path / "straight", *AVERAGE)
    # stopped after iteration 2: one iteration averaged, the checkpoint holds the average and the live weights
    _fit(tmp_path / "split", *AVERAGE, "--trainer.callbacks+=test_averaging.StopAfter", "--trainer.callbacks.epoch=2")
    state = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 2 and LIVE_KEY in state
    resumed = _fit(tmp_path / "split", *AVERAGE, "--ckpt_path=last")
    assert _callback(resumed, PolicyAveraging).count == 3
    a, b = _weights(straight), _weights(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_under_lora_only_the_adapter_is_averaged_and_the_checkpoint_stays_adapter_only(tmp_path):
    cli = _fit(tmp_path, "--model.policy.init_args.lora.r=4", *AVERAGE)
    averaging = _callback(cli, PolicyAveraging)
    assert averaging.count == 3 and averaging.average and all("lora_" in n for n in averaging.average)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["msgrpo"]["adapter_only"]
    assert all("lora_" in k for k in state["state_dict"] if k.startswith("policy."))
    assert set(state[LIVE_KEY]) == set(averaging.average)


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="start must be a fraction"):
        PolicyAveraging(start=1.0)
    with pytest.raises(ConfigError, match="max_epochs"):
        PolicyAveraging().first_epoch(L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False))
