"""MSGRPOModule without a Trainer: construction, checkpoint contents, evaluation."""

import pytest
import torch

from msgrpo.components.games import FrozenLake
from msgrpo.errors import ConfigError
from msgrpo.evaluation import build_panel
from msgrpo.loss import MSGRPOLoss
from msgrpo.module import CHECKPOINT_KEY, MSGRPOModule
from msgrpo.policy import LoraSettings


def test_the_kl_reference_is_copied_at_construction(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=1)
    assert policy.reference is None
    module = MSGRPOModule(policy, MSGRPOLoss(kl_coef=0.1))
    assert module.needs_reference and policy.reference is not None
    assert not MSGRPOModule(tiny_policy_factory(max_new_tokens=1)).needs_reference
    # LoRA: the adapter-disabled base is the reference, nothing is copied
    lora = tiny_policy_factory(max_new_tokens=1, lora=LoraSettings(r=2))
    MSGRPOModule(lora, MSGRPOLoss(kl_coef=0.1))
    assert lora.reference is None


def test_lockstep_is_the_policys_one_flag(tiny_policy, monkeypatch):
    # set by the sharding; generate reads it (every rank runs max_new_tokens passes) and so does the rollout
    calls = []
    generate = tiny_policy.engine.generate
    record = lambda *a, **k: calls.append(k["fixed_steps"]) or generate(*a, **k)  # noqa: E731
    monkeypatch.setattr(tiny_policy.engine, "generate", record)
    prompts = tiny_policy.encode([[{"role": "user", "content": "hi"}]])
    tiny_policy.generate(prompts, greedy=True)
    tiny_policy.lockstep = True
    tiny_policy.generate(prompts, greedy=True)
    assert calls == [False, True]


def test_checkpoint_round_trip_keeps_counters_history_and_only_the_adapter(tiny_policy_factory):
    module = MSGRPOModule(tiny_policy_factory(max_new_tokens=1, lora=LoraSettings(r=2)))
    module.guard.bad, module.guard.skipped, module.rollbacks = 1, 2, 3
    module.history = [{"iteration": 0.0, "rollout/return_mean": 0.5}]
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    policy_keys = [k for k in checkpoint["state_dict"] if k.startswith("policy.")]
    assert policy_keys and all("lora_" in k for k in policy_keys)
    assert checkpoint[CHECKPOINT_KEY]["adapter_only"]
    fresh = MSGRPOModule(tiny_policy_factory(max_new_tokens=1, lora=LoraSettings(r=2)))
    fresh.on_load_checkpoint(checkpoint)
    assert (fresh.guard.bad, fresh.guard.skipped, fresh.rollbacks) == (1, 2, 3)
    assert fresh.history == module.history
    fresh.load_state_dict(checkpoint["state_dict"])  # the frozen base was filled back in
    # an adapter of another rank does not fit: one clear error
    other = MSGRPOModule(tiny_policy_factory(max_new_tokens=1, lora=LoraSettings(r=2, target_modules=["q_proj"])))
    bad = {"state_dict": dict(other.state_dict())}
    other.on_save_checkpoint(bad)
    with pytest.raises(ConfigError, match="LoRA adapter lacks"):
        fresh.on_load_checkpoint(bad)


def test_evaluate_plays_the_panel_without_a_trainer(tiny_policy_factory):
    policy = tiny_policy_factory(
        max_new_tokens=1, response_prefix="<action>", allowed_tokens=["left", "down", "right", "up"]
    )
    module = MSGRPOModule(policy)
    (scenario,) = build_panel(FrozenLake(), ["train"], episodes=4)
    result = module.evaluate(scenario)
    assert result["episodes"] == 4.0 and result["invalid_action_rate"] == 0.0
    assert module.evaluate(scenario) == result  # greedy and seeded: the same every time


def test_bad_module_settings(tiny_policy):
    for kwargs, needle in (({"rollback_kl": 0}, "rollback_kl"), ({"rollback_retries": -1}, "rollback_retries")):
        with pytest.raises(ConfigError, match=needle):
            MSGRPOModule(tiny_policy, **kwargs)
    assert torch.is_tensor(next(MSGRPOModule(tiny_policy).parameters()))


@pytest.mark.slow
def test_fit_always_ends_with_an_evaluation(tmp_path):
    # evaluations every 50 iterations (the recipe's) and a 3-iteration run: the last iteration is evaluated anyway
    from fast_fit import FAST_FIT, run_dir

    from msgrpo.recipes import frozen_lake

    args = ["fit", *FAST_FIT, "--trainer.limit_val_batches=1.0", "--trainer.check_val_every_n_epoch=2",
            "--trainer.max_epochs=3", *run_dir(tmp_path)]  # fmt: skip
    cli = frozen_lake.main(args)
    evaluated = [row["iteration"] for row in cli.model.history if "eval/train/success_rate" in row]
    assert evaluated == [1.0, 2.0]  # every 2nd, and the last
    assert cli.trainer.check_val_every_n_epoch == 2  # the setting is left as it was
    assert cli.model.eval_results


@pytest.mark.slow
def test_a_run_stopped_early_ends_with_an_evaluation(tmp_path):
    # evaluations every 50 iterations, a stop requested during iteration 1 of 10: it is evaluated there
    import lightning as L
    from fast_fit import FAST_FIT, run_dir

    from msgrpo.cli import MSGRPOCLI, config_path

    class StopDuring(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    args = [*FAST_FIT, "--trainer.limit_val_batches=1.0", "--trainer.check_val_every_n_epoch=50",
            "--trainer.max_epochs=10", *run_dir(tmp_path)]  # fmt: skip
    cli = MSGRPOCLI(default_config=config_path("frozen_lake.yaml"), args=args, run=False)
    cli.trainer.callbacks.append(StopDuring())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    evaluated = [row["iteration"] for row in cli.model.history if "eval/train/success_rate" in row]
    assert evaluated == [1.0] and len(cli.model.history) == 2
    assert cli.trainer.check_val_every_n_epoch == 50  # the setting is left as it was
