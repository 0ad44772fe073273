"""The Frozen Lake recipe through main([...]), as a user runs it."""

import json
from importlib import resources

import pytest
import torch
from fast_fit import QUIET, SMALL_ROLLOUT, run_dir

from msgrpo.lm.models import TinySettings
from msgrpo.policy import LanguagePolicy
from msgrpo.recipes import frozen_lake

# unconstrained answers: the untrained model's format penalty varies tiny rollouts' returns (constrained to
# the four moves on the fixed map, a 2 x 2 rollout often carries no signal, and then no update is made;
# 4 groups of 4: some group has unequal returns)
FREE = ["--model.policy.init_args.allowed_tokens=null"]
FAST = [
    "--trainer.max_epochs=2",
    *QUIET,
    *SMALL_ROLLOUT,
    "--data.num_groups=4",
    "--data.group_size=4",
    "--data.eval_episodes=2",
    *FREE,
]


def _fast(tmp_path):
    return FAST + run_dir(tmp_path)


@pytest.mark.slow
def test_fit_changes_parameters_and_logs_metrics(tmp_path, capsys):
    cli = frozen_lake.main(["fit", *_fast(tmp_path), "--trainer.check_val_every_n_epoch=2"])
    settings = cli.config.fit.model.policy.init_args
    assert settings.tiny is None  # the recipe's tiny model has the default shape
    initial = LanguagePolicy(max_new_tokens=1, tiny=TinySettings(), seed=settings.seed)
    pairs = list(zip(cli.model.policy.parameters(), initial.parameters(), strict=True))
    assert all(p.shape == q.shape for p, q in pairs)  # the same initial model, rebuilt from its seed
    assert any(not torch.equal(p, q) for p, q in pairs)
    metrics = cli.trainer.callback_metrics
    for key in ("rollout/success_rate", "rollout/return_mean", "rollout/invalid_action_rate", "loss/policy",
                "loss/clip_frac", "loss/entropy", "perf/rollout_s", "perf/update_s", "perf/tokens_per_s",
                "eval/train/success_rate"):  # fmt: skip
        assert key in metrics, key
    out = capsys.readouterr().out
    assert "msgrpo: trained 2 iterations" in out
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() or list(tmp_path.rglob("last.ckpt"))


@pytest.mark.slow
def test_summary_line_averages_the_first_and_last_iterations(tmp_path, capsys):
    cli = frozen_lake.main(["fit", *_fast(tmp_path), "--trainer.max_epochs=4"])
    history = cli.model.history
    assert len(history) == 4
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("msgrpo: trained"))
    assert "(mean of the first and last 2 iterations): success rate (reached the goal)" in line

    def mean(rows, key):
        return f"{sum(r[key] for r in rows) / len(rows):.2f}"

    expected = f"mean return {mean(history[:2], 'rollout/return_mean')} -> {mean(history[2:], 'rollout/return_mean')}"
    assert expected in line


@pytest.mark.slow
def test_lr_scheduler_steps_once_per_iteration(tmp_path):
    cli = frozen_lake.main(
        [
            "fit",
            *_fast(tmp_path),
            "--trainer.max_epochs=3",
            "--model.lr_scheduler=torch.optim.lr_scheduler.StepLR",
            "--model.lr_scheduler.step_size=1",
            "--model.lr_scheduler.gamma=0.5",
        ]
    )
    lr = cli.config.fit.model.optimizer.init_args.lr
    logged = [h["loss/lr"] for h in cli.model.history]
    assert logged == pytest.approx([lr, lr / 2, lr / 4])  # the rate each iteration trained with
    assert cli.model.optimizers().param_groups[0]["lr"] == pytest.approx(lr / 8)


@pytest.mark.slow
def test_target_kl_stops_the_iterations_remaining_updates(tmp_path):
    args = ["fit", *_fast(tmp_path), "--trainer.max_epochs=1", "--data.num_minibatches=3"]
    args += ["--data.sampler.init_args.num_episodes=4", "--model.optimizer.init_args.lr=0.1"]  # a big first step
    args += ["--model.rollback_kl=null"]  # (the trust region would undo the big step and retry it smaller)
    free = frozen_lake.main([*args, "--model.target_kl=null"])
    assert free.model.history[-1]["loss/kl_stopped"] == 0.0
    # the first mini-batch is on-policy (approximate KL 0) and updates; after it the policy has moved by
    # more than 1e-8 (5e-8 here), so the second and third mini-batches are skipped
    stopped = frozen_lake.main([*args, "--model.target_kl=1e-8"])
    assert stopped.model.history[-1]["loss/kl_stopped"] == 2.0
    with pytest.raises(SystemExit):
        frozen_lake.main([*args, "--model.target_kl=0"])


@pytest.mark.slow
def test_components_swap_by_short_name_and_test_writes_json(tmp_path):
    cli = frozen_lake.main(
        [
            "fit",
            *_fast(tmp_path),
            "--trainer.max_epochs=1",
            "--data.sampler=All",
            "--data.credit_assigner=EpisodeReturn",
        ]
    )
    assert type(cli.datamodule.sampler).__name__ == "All"
    target = tmp_path / "eval.json"
    frozen_lake.main(["test", *_fast(tmp_path), f"--results_json={target}", "--data.eval_scenarios=[train]"])
    result = json.loads(target.read_text())
    assert set(result["scenarios"]) == {"train"}
    assert 0.0 <= result["scenarios"]["train"]["success_rate"] <= 1.0


@pytest.mark.slow
def test_print_config_shows_class_paths(capsys):
    with pytest.raises(SystemExit) as exit_info:
        frozen_lake.main(["fit", "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "msgrpo.components.samplers.AbsoluteAdvantageWeighted" in out
    assert "reload_dataloaders_every_n_epochs: 1" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data.sampler=NoSuchSampler"], "NoSuchSampler"),
        (["--data.group_size=1"], "group_size must be >= 2"),
        (["--model.policy.init_args.model_name_or_path=./missing/model"], "./missing/model"),
        (["--data.group_size=abc"], "abc"),
    ],
)
def test_user_errors_are_short(args, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        frozen_lake.main(["fit", *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 25


@pytest.mark.slow
def test_malformed_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  group_size: [1\n")
    with pytest.raises(SystemExit) as exit_info:
        frozen_lake.main(["fit", f"--config={bad}"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "malformed YAML in" in err and "bad.yaml" in err and "(line 3, column 1)" in err and "Traceback" not in err


@pytest.mark.slow
def test_every_shipped_yaml_loads(capsys):
    import yaml

    from msgrpo.recipes import snake

    root = resources.files("msgrpo.recipes") / "configs"
    configs = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
    assert {
        "frozen_lake.yaml",
        "snake.yaml",
        "smollm2.yaml",
        "sampler_all.yaml",
        "credit_discounted.yaml",
    } <= set(configs)
    for name in configs:
        recipe = snake if name == "snake.yaml" else frozen_lake
        args = ["fit", "--print_config"]
        overlay = None
        if name not in ("frozen_lake.yaml", "snake.yaml"):
            overlay = yaml.safe_load((root / name).read_text())
            args.insert(1, f"--config={root / name}")
        with pytest.raises(SystemExit) as exit_info:
            recipe.main(args)
        assert exit_info.value.code == 0, name
        printed = yaml.safe_load(capsys.readouterr().out)
        for slot, value in ((overlay or {}).get("data") or {}).items():
            if isinstance(value, dict) and "class_path" in value:
                assert printed["data"][slot]["class_path"] == value["class_path"], name
                # an overlay that switches class keeps no stale init_args of the previous class
                assert set(printed["data"][slot].get("init_args") or {}) >= set(value.get("init_args") or {})
        if name == "sampler_all.yaml":
            assert not printed["data"]["sampler"].get("init_args"), printed["data"]["sampler"]
