"""MSGRPOCLI: one-line errors naming the setting, checkpointing off, one seed for the whole run, quiet runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fast_fit import FAST_FIT, run_dir

from msgrpo.recipes import frozen_lake, snake

# (recipe, argument, what the one error line must say)
BAD_SETTINGS = [
    (frozen_lake, "--data.game.init_args.size=1", "data.game.init_args.size must be an integer >= 2, got 1"),
    (frozen_lake, "--data.game.init_args.frozen_prob=2", "data.game.init_args.frozen_prob must be in (0, 1], got 2.0"),
    (frozen_lake, "--data.game.init_args.max_steps=0", "data.game.init_args.max_steps must be an integer >= 1"),
    (frozen_lake, "--data.game.init_args.map_name=9x9", "data.game.init_args.map_name must be one of"),
    (frozen_lake, "--data.game.init_args.format_penalty=-1", "data.game.init_args.format_penalty must be >= 0"),
    (snake, "--data.game.init_args.width=1", "data.game.init_args.width must be >= 2, got 1"),
    (snake, "--data.game.init_args.num_opponents=12", "data.game.init_args.num_opponents must be between 0 and 9"),
    (snake, "--data.game.init_args.poison_apples=9", "data.game.init_args.poison_apples must be in [0, num_apples=5]"),
    (snake, "--data.game.init_args.max_rounds=0", "data.game.init_args.max_rounds must be >= 1, got 0"),
    (snake, "--data.game.init_args.death_penalty=-2", "data.game.init_args.death_penalty must be >= 0"),
    (frozen_lake, "--model.policy.init_args.temperature=0", "model.policy.init_args.temperature must be > 0, got 0.0"),
    (frozen_lake, "--model.policy.init_args.top_p=0", "model.policy.init_args.top_p must be in (0, 1]"),
    (frozen_lake, "--model.policy.init_args.max_new_tokens=0", "model.policy.init_args.max_new_tokens must be >= 1"),
    (frozen_lake, "--model.policy.init_args.dtype=float8", "model.policy.init_args.dtype must be float32, bfloat16"),
    (frozen_lake, "--model.policy.init_args.lora.dropout=0.1", "model.policy.init_args.lora.dropout must be 0"),
    (frozen_lake, "--model.policy.init_args.allowed_tokens=[]", "model.policy.init_args.allowed_tokens is empty"),
    (frozen_lake, "--model.loss.init_args.clip_eps=0", "model.loss.init_args.clip_eps must be > 0, got 0.0"),
    (frozen_lake, "--model.loss.init_args.kl_coef=-1", "model.loss.init_args.kl_coef must be >= 0, got -1.0"),
    (frozen_lake, "--model.loss.init_args.entropy_coef=-1", "model.loss.init_args.entropy_coef must be >= 0"),
    (frozen_lake, "--model.target_kl=0", "model.target_kl must be > 0 or null, got 0.0"),
    (frozen_lake, "--model.max_grad_norm=-1", "model.max_grad_norm must be > 0 or null"),
    (frozen_lake, "--model.max_bad_updates=0", "model.max_bad_updates must be >= 1, got 0"),
    (frozen_lake, "--data.group_size=1", "data.group_size must be >= 2 (group-relative advantages), got 1"),
    (frozen_lake, "--data.num_minibatches=0", "data.num_minibatches must be >= 1, got 0"),
    (frozen_lake, "--data.token_budget=0", "data.token_budget must be >= 1, got 0"),
    (frozen_lake, "--data.eval_episodes=0", "data.eval_episodes must be >= 1, got 0"),
    (frozen_lake, "--data.env_step_timeout_s=0", "data.env_step_timeout_s must be > 0 or null"),
    (frozen_lake, "--data.on_env_error=ignore", "data.on_env_error must be 'record' or 'raise'"),
    (frozen_lake, "--data.eval_scenarios=[moon]", "data.eval_scenarios: unknown scenario(s) ['moon']"),
    (frozen_lake, "--data.sampler.init_args.num_episodes=0", "sampler.init_args.num_episodes must be an integer >= 1"),
    (frozen_lake, "--data.sampler.init_args.num_episodes=999", "sampler.init_args.num_episodes=999 exceeds the 128"),
    (frozen_lake, "--data.sampler.init_args.scheme=best", "data.sampler.init_args.scheme: Expected a typing.Literal"),
    (frozen_lake, "--data.group_size=abc", "data.group_size: Expected a <class 'int'>. Got value: abc"),
    (frozen_lake, "--data.sampler=NoSuchSampler", "data.sampler"),
    (frozen_lake, "--data.credit_assigner.init_args.eps=-1", "data.credit_assigner.init_args.eps must be a finite"),
    (frozen_lake, "--data.credit_assigner=DiscountedReturn --data.credit_assigner.init_args.gamma=2",
     "data.credit_assigner.init_args.gamma must be in [0, 1], got 2.0"),
    (frozen_lake, "--data.sampler=GroupVarianceFilter --data.sampler.init_args.keep_fraction=0",
     "data.sampler.init_args.keep_fraction must be in (0, 1]"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "arg", "needle"), BAD_SETTINGS, ids=[a for _, a, _ in BAD_SETTINGS])
def test_every_bad_setting_is_one_error_line_naming_it(recipe, arg, needle, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # pytest's own arguments would add LightningCLI's warning
    with pytest.raises(SystemExit) as exit_info:
        recipe.main(["fit", *arg.split(" "), "--trainer.max_epochs=0"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Seed set")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


def _fit(root, *extra: str):
    return frozen_lake.main(
        [
            "fit",
            *FAST_FIT,
            "--trainer.max_epochs=2",
            *run_dir(root),
            "--data.game.init_args.map_name=null",
            *extra,
        ]
    )


@pytest.mark.slow
def test_enable_checkpointing_false_turns_checkpointing_off(tmp_path):
    cli = _fit(tmp_path, "--trainer.enable_checkpointing=false")
    assert cli.trainer.checkpoint_callback is None and len(cli.model.history) == 2
    assert not list(tmp_path.rglob("*.ckpt"))


def _returns(cli) -> list[float]:
    return [round(row["rollout/return_mean"], 6) for row in cli.model.history]


@pytest.mark.slow
def test_seed_everything_changes_the_whole_run_and_explicit_seeds_win(tmp_path):
    a = _fit(tmp_path / "a", "--seed_everything=0")
    b = _fit(tmp_path / "b", "--seed_everything=4243")
    again = _fit(tmp_path / "again", "--seed_everything=4243")
    assert (a.datamodule.seed, a.model.policy.seed) == (0, 0)
    assert (b.datamodule.seed, b.model.policy.seed) == (4243, 4243)
    assert a.datamodule.group_seeds(0) != b.datamodule.group_seeds(0)
    a_w, b_w = next(a.model.policy.model.parameters()), next(b.model.policy.model.parameters())
    assert not (a_w == b_w).all()  # the tiny model's initial weights follow the seed too
    assert _returns(b) == _returns(again)
    assert a.model.policy.tokenizer.get_vocab() == b.model.policy.tokenizer.get_vocab()  # ids never change
    pinned = _fit(tmp_path / "pinned", "--seed_everything=4243", "--data.seed=0", "--model.policy.init_args.seed=0")
    assert (pinned.datamodule.seed, pinned.model.policy.seed) == (0, 0)
    assert pinned.datamodule.group_seeds(0) == a.datamodule.group_seeds(0)


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_gymnasium_make_finds_the_envs_after_import_msgrpo(tmp_path):
    code = (
        "import gymnasium as gym, msgrpo\n"
        "from gymnasium.utils.env_checker import check_env\n"
        "for env_id in ('msgrpo/Snake-v0', 'msgrpo/FrozenLake-v0'):\n"
        "    env = gym.make(env_id)\n"
        "    check_env(env.unwrapped)\n"
        "    print(env_id, env.reset(seed=3)[0] is not None)\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "msgrpo/Snake-v0 True" in proc.stdout and "msgrpo/FrozenLake-v0 True" in proc.stdout


@pytest.mark.slow
def test_a_normal_run_prints_no_library_warnings(tmp_path):
    code = (
        "from msgrpo.recipes import snake\n"
        "snake.main(['fit', '--trainer.max_epochs=2', '--trainer.check_val_every_n_epoch=2', "
        "'--data.eval_episodes=2', '--data.num_groups=2', '--data.sampler.init_args.num_episodes=4', "
        "'--trainer.enable_progress_bar=false'])\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    noise = [line for line in proc.stderr.splitlines() if "Warning" in line or "warn" in line or "Tip" in line]
    assert not noise, noise
    assert "msgrpo: trained 2 iterations" in proc.stdout


def test_gymnasium_make_with_the_module_prefix_needs_no_import(tmp_path):
    # gymnasium 1.x has no entry-point plugin discovery; its "module:env_id" form imports the module first
    code = (
        "import sys, gymnasium as gym\n"
        "env = gym.make('msgrpo:msgrpo/Snake-v0', max_rounds=3)\n"
        "print(type(env.unwrapped).__name__, env.reset(seed=1)[0] is not None)\n"
    )
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "SnakeEnv True" in proc.stdout


def test_null_for_a_field_of_a_dataclass_setting_becomes_a_dict():
    from msgrpo.cli import _null_fields_as_dicts

    args = [
        "fit",
        "--model.policy.init_args.lora.layers=null",
        "--model.policy.lora.layers",
        "None",
        "--model.policy.init_args.tiny.num_layers=~",
        "--model.policy.init_args.lora.r=8",  # not null: unchanged
        "--model.target_kl=null",  # not a dataclass setting: unchanged
        "-c",
        "--x.lora.layers=null",  # a config file's name, however odd
    ]
    assert _null_fields_as_dicts(args) == [
        "fit",
        '--model.policy.init_args.lora={"layers": null}',
        '--model.policy.lora={"layers": null}',
        '--model.policy.init_args.tiny={"num_layers": null}',
        "--model.policy.init_args.lora.r=8",
        "--model.target_kl=null",
        "-c",
        "--x.lora.layers=null",
    ]


def test_dataclass_settings_are_the_policys_dataclass_parameters():
    import dataclasses
    import inspect
    import typing

    from msgrpo.cli import DATACLASS_SETTINGS
    from msgrpo.policy import LanguagePolicy

    hints = typing.get_type_hints(LanguagePolicy.__init__)
    dataclass_params = {
        name
        for name in inspect.signature(LanguagePolicy.__init__).parameters
        if any(dataclasses.is_dataclass(t) for t in typing.get_args(hints.get(name)) or [hints.get(name)])
    }
    assert dataclass_params == set(DATACLASS_SETTINGS)


@pytest.mark.slow
def test_lora_layers_null_on_the_command_line_adapts_every_layer():
    # jsonargparse alone refuses this argument ("Expected a <class 'list'>"); a config fixing the top layer
    # first, then null: every layer is adapted, the other LoRA settings kept
    from msgrpo.cli import MSGRPOCLI, config_path

    def adapted(*lora_args: str) -> tuple[set[str], set[int]]:
        cli = MSGRPOCLI(config_path("frozen_lake.yaml"), args=[*FAST_FIT, *lora_args], run=False)
        params = [(n, p) for n, p in cli.model.policy.model.named_parameters() if p.requires_grad]
        ranks = {p.shape[0] for n, p in params if "lora_A" in n}
        return {n.split(".layers.")[1][0] for n, _ in params}, ranks

    top = ["--model.policy.init_args.lora.r=2", "--model.policy.init_args.lora.layers=[-1]"]
    assert adapted(*top) == ({"1"}, {2})  # the tiny model has 2 decoder layers
    assert adapted(*top, "--model.policy.init_args.lora.layers=null") == ({"0", "1"}, {2})


def test_the_loggers_save_dir_follows_the_root_dir():
    from msgrpo.cli import _save_dir_follows_root

    assert _save_dir_follows_root(["fit", "--trainer.default_root_dir=a"]) == [
        "fit", "--trainer.default_root_dir=a", "--trainer.logger.init_args.save_dir=a"
    ]  # fmt: skip
    both = ["fit", "--trainer.default_root_dir=a", "--trainer.logger.init_args.save_dir=b"]
    assert _save_dir_follows_root(both) == both  # an explicit save_dir wins
    other = ["fit", "--trainer.default_root_dir=a", "--trainer.logger=TensorBoardLogger"]
    assert _save_dir_follows_root(other) == [*other, "--trainer.logger.init_args.save_dir=a"]  # another logger too
    off = ["fit", "--trainer.default_root_dir=a", "--trainer.logger=false"]
    assert _save_dir_follows_root(off) == off
    short = ["fit", "--trainer.default_root_dir=a", "--trainer.logger.save_dir=b"]  # jsonargparse's shorthand
    assert _save_dir_follows_root(short) == short
    spaced = ["fit", "--trainer.default_root_dir", "a"]
    assert _save_dir_follows_root(spaced) == [*spaced, "--trainer.logger.init_args.save_dir=a"]
    assert _save_dir_follows_root(["fit"]) == ["fit"]
