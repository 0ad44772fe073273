"""Numeric faults skip updates without touching weights; stuck environments time out."""

import time

import pytest
import torch
from fast_fit import plain_trainer

from msgrpo.components.games import FrozenLake
from msgrpo.components.samplers import All
from msgrpo.data import RolloutDataModule
from msgrpo.loss import MSGRPOLoss
from msgrpo.module import MSGRPOModule
from msgrpo.rollout import play


class NaNLoss(MSGRPOLoss):
    """Produces NaN on the updates listed in ``bad`` (call counter over micro-batches)."""

    def __init__(self, bad):
        # an entropy bonus: every update has a gradient even when the untrained model's advantages are all 0
        # (an update with no signal makes no step, so it could never meet the NaN)
        super().__init__(entropy_coef=0.01)
        self.bad, self.calls = set(bad), 0

    def forward(self, logprobs, *args, **kwargs):
        self.calls += 1
        if self.calls in self.bad:
            logprobs = logprobs * float("nan")
        return super().forward(logprobs, *args, **kwargs)


def _fit(policy, loss, tmp_path, epochs, max_bad=10):
    module = MSGRPOModule(policy, loss, max_bad_updates=max_bad)
    data = RolloutDataModule(FrozenLake(), sampler=All(), num_groups=1, group_size=2)
    trainer = plain_trainer(tmp_path, max_epochs=epochs, reload_dataloaders_every_n_epochs=1)
    return module, data, trainer


@pytest.mark.slow
def test_nan_update_is_skipped_and_weights_untouched(tiny_policy_factory, tmp_path):
    policy = tiny_policy_factory(max_new_tokens=1, response_prefix="<action>")
    before = [p.detach().clone() for p in policy.parameters()]
    module, data, trainer = _fit(policy, NaNLoss(bad={1}), tmp_path, epochs=1)
    with pytest.warns(UserWarning, match="non-finite loss or gradient: update skipped"):
        trainer.fit(module, datamodule=data)
    assert module.guard.skipped == 1
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # the only update was skipped
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    # a later good update still trains
    module2, data2, trainer2 = _fit(policy, NaNLoss(bad=set()), tmp_path, epochs=1)
    trainer2.fit(module2, datamodule=data2)
    assert not all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


@pytest.mark.slow
def test_counters_count_each_iterations_events(tiny_policy_factory, tmp_path):
    # NaN on the first update of iterations 0 and 2 (one micro-batch an update): loss/skipped_updates logs each
    # iteration's own count, like its siblings (no_signal_updates, kl_stopped, rollbacks), not a running total
    policy = tiny_policy_factory(max_new_tokens=1, response_prefix="<action>")
    module, data, trainer = _fit(policy, NaNLoss(bad={1, 3}), tmp_path, epochs=3)
    with pytest.warns(UserWarning, match="update skipped"):
        trainer.fit(module, datamodule=data)
    assert [row["loss/skipped_updates"] for row in module.history] == [1.0, 0.0, 1.0]
    assert module.guard.skipped == 2  # the run's total


@pytest.mark.slow
def test_consecutive_bad_updates_stop_with_checkpoint(tiny_policy_factory, tmp_path):
    policy = tiny_policy_factory(max_new_tokens=1, response_prefix="<action>")
    module, data, trainer = _fit(policy, NaNLoss(bad=range(1, 100)), tmp_path, epochs=10, max_bad=3)
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError, match="3 consecutive non-finite updates"):
        trainer.fit(module, datamodule=data)
    assert (tmp_path / "checkpoints" / "nonfinite-stop.ckpt").exists()
    assert trainer.current_epoch == 2  # stopped on the third iteration's update


class StuckLake(FrozenLake):
    def act(self, env, text):
        if env.np_random_seed == 1:
            time.sleep(5)
        return super().act(env, text)


def test_stuck_env_times_out_and_others_finish(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=1)
    start = time.perf_counter()
    episodes = play(policy, StuckLake(), [1, 2], 1, env_step_timeout_s=0.2)
    assert time.perf_counter() - start < 4
    assert "EnvTimeout" in episodes[0].error and episodes[0].length == 0
    assert episodes[1].error is None and episodes[1].length == 8


class BrokenLake(FrozenLake):
    def reset(self, env, seed):
        raise RuntimeError("the lake is closed")


@pytest.mark.slow
def test_every_reset_failing_is_a_logged_no_op_iteration(tiny_policy_factory, tmp_path):
    policy = tiny_policy_factory(max_new_tokens=1, response_prefix="<action>")
    before = [p.detach().clone() for p in policy.parameters()]
    module = MSGRPOModule(policy)
    data = RolloutDataModule(BrokenLake(), num_groups=2, group_size=2)
    trainer = plain_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="all 4 episodes failed .*the lake is closed.*trains nothing"):
        trainer.fit(module, datamodule=data)
    assert trainer.current_epoch == 2 and len(module.history) == 2
    assert module.history[-1]["rollout/error_rate"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    # on_env_error="raise" stops at the first failing reset instead
    strict = RolloutDataModule(BrokenLake(), num_groups=2, group_size=2, on_env_error="raise")
    trainer = plain_trainer(tmp_path, max_epochs=1)
    with pytest.raises(RuntimeError, match="the lake is closed"):
        trainer.fit(MSGRPOModule(policy), datamodule=strict)
