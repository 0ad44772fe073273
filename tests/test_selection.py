"""BestPolicy: the best-validating iteration's weights end the run; training untouched; held-out seeds; resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fast_fit import FAST_FIT, run_dir

from msgrpo.callbacks.selection import VALIDATION_SEED, BestPolicy
from msgrpo.errors import ConfigError
from msgrpo.evaluation import PANEL_SEED
from msgrpo.module import MSGRPOModule
from msgrpo.recipes import frozen_lake

# Weight decay off: the weights move through gradients only. An evaluation after every iteration, so the
# last one runs after the selection (Lightning evaluates before on_train_epoch_end).
FAST = [
    *FAST_FIT,
    "--model.optimizer.init_args.weight_decay=0",
    "--trainer.limit_val_batches=1.0",
    "--trainer.check_val_every_n_epoch=1",
    "--data.eval_scenarios=[train]",
    "--trainer.max_epochs=4",
]
SCORES = {1: 0.1, 2: 0.5, 3: 0.5, 4: 0.2}  # by iteration, 1-based: iteration 2 is best (3 ties: the earlier wins)
SCRIPTED = ["--trainer.callbacks+=test_selection.Scripted", "--trainer.callbacks.every_n_epochs=1"]


class Scripted(BestPolicy):
    """Scores each iteration's policy from ``SCORES`` (and still plays the validation panel, to count it)."""

    played = 0

    def score(self, pl_module) -> float:
        Scripted.played += len(self.panel)
        return SCORES[pl_module.current_epoch + 1]


class Recorder(L.Callback):
    """Keeps copies of the trainable weights after every iteration's update and at every evaluation."""

    def __init__(self) -> None:
        self.updated: list[dict[str, torch.Tensor]] = []
        self.evaluated: list[dict[str, torch.Tensor]] = []

    @staticmethod
    def _copy(pl_module):
        return {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:  # the iteration's update is done
            self.updated.append(self._copy(pl_module))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.evaluated.append(self._copy(pl_module))


def _fit(root, *extra: str):
    return frozen_lake.main(["fit", *FAST, *run_dir(root), "--trainer.callbacks+=test_selection.Recorder", *extra])


def _callback(cli, kind):
    return next(c for c in cli.trainer.callbacks if isinstance(c, kind))


def _weights(cli) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in cli.model.named_parameters() if p.requires_grad}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[n], b[n]) for n in b)


@pytest.mark.slow
def test_the_run_ends_with_the_best_validating_policy_and_training_is_untouched(tmp_path):
    plain = _callback(_fit(tmp_path / "plain"), Recorder)
    cli = _fit(tmp_path / "selected", *SCRIPTED, "--trainer.callbacks.start=0.25")
    selected, chooser = _callback(cli, Recorder), _callback(cli, Scripted)
    assert len(plain.updated) == len(selected.updated) == 4
    for ours, theirs in zip(selected.updated, plain.updated, strict=True):  # the same training, bit for bit
        assert _equal(ours, theirs)
    assert not _equal(plain.updated[1], plain.updated[3])  # the weights moved after the chosen iteration
    assert chooser.scores == [(1, 0.1), (2, 0.5), (3, 0.5), (4, 0.2)] and chooser.best_epoch == 1
    assert _equal(_weights(cli), plain.updated[1])  # fit ends with iteration 2's policy
    assert _equal(selected.evaluated[-1], plain.updated[1])  # and the final evaluation played it
    assert _equal(selected.evaluated[2], plain.updated[2])  # earlier evaluations played the live policy
    state = torch.load(tmp_path / "selected" / "checkpoints" / "last.ckpt", weights_only=False)
    for name, value in plain.updated[1].items():
        assert torch.equal(state["state_dict"][name], value)  # last.ckpt holds the selected policy
    checked = [row["loss/onpolicy_error"] for row in cli.model.history if "loss/onpolicy_error" in row]
    assert checked and max(checked) < 1e-4  # ratio 1 at every iteration's first update
    assert [row.get("select/best_iteration") for row in cli.model.history] == [1.0, 2.0, 2.0, 2.0]


@pytest.mark.slow
def test_start_and_every_n_choose_the_validated_iterations(tmp_path):
    Scripted.played = 0
    cli = _fit(tmp_path, *SCRIPTED, "--trainer.callbacks.every_n_epochs=3", "--trainer.callbacks.start=0.5")
    chooser = _callback(cli, Scripted)
    # start 0.5 of 4: from iteration 2 (1-based) on; every 3rd: iteration 3; and always the last, 4
    assert [it for it, _ in chooser.scores] == [3, 4] and chooser.best_epoch == 2
    assert Scripted.played == 2  # one scenario, once per validation
    assert _equal(_weights(cli), _callback(cli, Recorder).updated[2])


@pytest.mark.slow
def test_without_evaluations_the_real_score_plays_held_out_seeds_and_training_is_untouched(tmp_path, monkeypatch):
    # the recipes' path: no evaluation between iterations, so the selection runs in on_train_epoch_end
    quiet = ["--trainer.limit_val_batches=0"]
    plain = _callback(_fit(tmp_path / "plain", *quiet), Recorder)
    played = []
    evaluate = MSGRPOModule.evaluate

    def spy(self, scenario, *args, **kwargs):
        played.append(list(scenario.seeds))
        return evaluate(self, scenario, *args, **kwargs)

    monkeypatch.setattr(MSGRPOModule, "evaluate", spy)
    chooser_args = ["--trainer.callbacks+=msgrpo.callbacks.selection.BestPolicy",
                    "--trainer.callbacks.every_n_epochs=2"]  # fmt: skip
    cli = _fit(tmp_path / "selected", *quiet, *chooser_args, "--trainer.callbacks.episodes=3")
    chooser, selected = _callback(cli, BestPolicy), _callback(cli, Recorder)
    assert played == [[VALIDATION_SEED, VALIDATION_SEED + 1, VALIDATION_SEED + 2]] * 2  # iterations 2 and 4
    for ours, theirs in zip(selected.updated, plain.updated, strict=True):  # real episodes played, same training
        assert _equal(ours, theirs)
    assert [it for it, _ in chooser.scores] == [2, 4]
    first_best = max(range(2), key=lambda i: (chooser.scores[i][1], -i))  # the highest score, the earlier on a tie
    assert chooser.best_epoch + 1 == chooser.scores[first_best][0]
    assert _equal(_weights(cli), plain.updated[chooser.best_epoch])
    state = torch.load(tmp_path / "selected" / "checkpoints" / "last.ckpt", weights_only=False)
    for name, value in plain.updated[chooser.best_epoch].items():
        assert torch.equal(state["state_dict"][name], value)
    assert cli.model.history[-1]["select/best_iteration"] == chooser.best_epoch + 1


@pytest.mark.slow
def test_the_best_of_a_scripted_run_without_evaluations_ends_it(tmp_path):
    cli = _fit(tmp_path, "--trainer.limit_val_batches=0", *SCRIPTED)
    assert _callback(cli, Scripted).best_epoch == 1
    assert _equal(_weights(cli), _callback(cli, Recorder).updated[1])
    assert not _equal(_callback(cli, Recorder).updated[1], _callback(cli, Recorder).updated[3])


@pytest.mark.slow
def test_an_evaluation_inside_an_iteration_is_not_a_selection_point(tmp_path):
    cli = _fit(tmp_path, *SCRIPTED, "--data.num_minibatches=2", "--trainer.val_check_interval=0.5")
    chooser = _callback(cli, Scripted)
    assert [it for it, _ in chooser.scores] == [1, 2, 3, 4] and chooser.best_epoch == 1  # once per iteration
    assert _equal(_weights(cli), _callback(cli, Recorder).updated[1])


@pytest.mark.slow
def test_validation_runs_under_the_precision_plugins_autocast(tmp_path, monkeypatch):
    # bf16-mixed: training rollouts and the evaluation panel run under autocast; so must the selection's
    # games (played between iterations, outside Lightning's steps), or it scores another policy's numerics
    import msgrpo.rollout

    autocast = []
    play = msgrpo.rollout.play

    def spy(*args, greedy=False, **kwargs):
        if greedy:  # the selection's games (training rollouts sample)
            autocast.append(torch.is_autocast_enabled("cpu"))
        return play(*args, greedy=greedy, **kwargs)

    monkeypatch.setattr(msgrpo.rollout, "play", spy)
    chooser = ["--trainer.callbacks+=msgrpo.callbacks.selection.BestPolicy", "--trainer.callbacks.every_n_epochs=2",
               "--trainer.callbacks.episodes=2"]  # fmt: skip
    _fit(tmp_path, "--trainer.limit_val_batches=0", "--trainer.precision=bf16-mixed", *chooser)
    assert autocast == [True, True]  # after iterations 2 and 4


class NaNScores(BestPolicy):
    def score(self, pl_module) -> float:
        return float("nan")


@pytest.mark.slow
def test_nan_scores_never_win_and_the_run_keeps_its_live_policy(tmp_path):
    cli = _fit(tmp_path, "--trainer.callbacks+=test_selection.NaNScores", "--trainer.callbacks.every_n_epochs=1")
    assert _callback(cli, NaNScores).best_epoch == -1
    assert _equal(_weights(cli), _callback(cli, Recorder).updated[3])


@pytest.mark.slow
def test_resume_matches_the_straight_run(tmp_path):
    straight = _fit(tmp_path / "straight", *SCRIPTED)
    # interrupted after iteration 3 (best so far: 2): not the run's last iteration, so nothing is swapped in
    _fit(tmp_path / "split", *SCRIPTED, "--trainer.callbacks+=test_averaging.StopAfter", "--trainer.callbacks.epoch=2")
    resumed = _fit(tmp_path / "split", *SCRIPTED, "--ckpt_path=last")
    a, b = _callback(straight, Scripted), _callback(resumed, Scripted)
    assert b.scores == a.scores and b.best_epoch == a.best_epoch == 1
    for name, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[name], value, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_under_lora_only_the_adapter_is_kept(tmp_path):
    cli = _fit(tmp_path, "--model.policy.init_args.lora.r=4", *SCRIPTED)
    chooser = _callback(cli, Scripted)
    assert chooser.best and all("lora_" in n for n in chooser.best)


@pytest.mark.slow
def test_validation_seeds_overlapping_the_evaluation_panel_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _fit(tmp_path, "--trainer.callbacks+=msgrpo.callbacks.selection.BestPolicy",
             f"--trainer.callbacks.seed={PANEL_SEED}")  # fmt: skip
    assert stop.value.code == 2
    assert "the validation seeds overlap the evaluation panel's" in capsys.readouterr().err


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="every_n_epochs"):
        BestPolicy(every_n_epochs=0)
    with pytest.raises(ConfigError, match="start must be a fraction"):
        BestPolicy(start=1.0)
    with pytest.raises(ConfigError, match="episodes"):
        BestPolicy(episodes=0)
    with pytest.raises(ConfigError, match="max_epochs"):
        BestPolicy().first_epoch(L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False))


@pytest.mark.slow
def test_with_policy_averaging_it_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _fit(
            tmp_path,
            "--trainer.callbacks+=msgrpo.callbacks.selection.BestPolicy",
            "--trainer.callbacks+=msgrpo.callbacks.averaging.PolicyAveraging",
        )
    assert "BestPolicy and PolicyAveraging both choose" in capsys.readouterr().err


@pytest.mark.slow
def test_listed_twice_it_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _fit(tmp_path, *["--trainer.callbacks+=msgrpo.callbacks.selection.BestPolicy"] * 2)
    assert stop.value.code == 2
    assert "BestPolicy is listed more than once" in capsys.readouterr().err


def test_sharded_parameters_are_refused():
    from types import SimpleNamespace

    trainer = SimpleNamespace(max_epochs=4, callbacks=[], datamodule=None)
    module = SimpleNamespace(sharding=SimpleNamespace(sharded=True))
    with pytest.raises(ConfigError, match="sharded parameters"):
        BestPolicy().on_fit_start(trainer, module)
