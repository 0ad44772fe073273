"""The Snake recipe exactly as the README's main command runs it: ``python -m msgrpo.recipes.snake fit``."""

import os
import subprocess
import sys

import pytest
import yaml
from fast_fit import SMALL_ROLLOUT, run_dir

SMALL = [
    "--trainer.max_epochs=2",
    "--trainer.check_val_every_n_epoch=2",
    "--trainer.accelerator=cpu",
    *SMALL_ROLLOUT,
    "--data.eval_episodes=2",
]


@pytest.mark.slow
def test_main_command_shows_progress_and_a_summary(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "msgrpo.recipes.snake", "fit", *SMALL, *run_dir(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # the iteration progress bar (on stderr): both iterations ticked, with the rollouts' figures
    assert "MS-GRPO" in proc.stderr and "2/2" in proc.stderr and "return=" in proc.stderr
    summary = next(line for line in out.splitlines() if line.startswith("msgrpo: trained"))
    assert summary.startswith("msgrpo: trained 2 iterations. Training rollouts: success rate (your snake alive")
    for part in ("mean return", "invalid actions", "Checkpoint:", "last.ckpt", "Metrics:"):
        assert part in summary, part
    # the trained policy's rows next to the reference players', on the same seeds
    assert "Last evaluation (success = your snake alive at the end), with the reference players (random, greedy)" in out
    assert "\n                 random " in out and "\n                 greedy " in out
    # the references play data.reference_episodes (1,000) per scenario; the trained row has its margin
    header = next(line for line in out.splitlines() if line.startswith("scenario ") and "vs random" in line)
    assert header.split()[-3:] == ["episodes", "vs", "random"]
    assert "    1000\n" in out and " SE\n" in out
    for scenario in ("default-8", "long-20", "poison", "two-opponents"):
        assert f"\n{scenario} " in out, scenario
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    config = yaml.safe_load((tmp_path / "version_0" / "config.yaml").read_text())
    assert config["data"]["game"]["class_path"] == "msgrpo.components.games.Snake"
    assert config["model"]["policy"]["init_args"]["allowed_tokens"] == ["up", "down", "left", "right"]
    assert config["model"]["policy"]["init_args"]["tiny"]["initializer_range"] == 0.1
    assert config["data"]["game"]["init_args"]["observation"] == "compact"
    assert config["data"]["credit_assigner"]["init_args"]["length_neutral"] is True
    assert config["data"]["train_scenarios"] == ["train", "poison", "two-opponents"]
    # the best-validating policy ends the run (validated after the last iteration here, of 2)
    callbacks = config["trainer"]["callbacks"]
    (select,) = [c for c in callbacks if c["class_path"] == "msgrpo.callbacks.selection.BestPolicy"]
    assert select["init_args"] == {
        "every_n_epochs": 10,
        "start": 0.0,
        "episodes": 64,
        "scenarios": None,
        "seed": 2_000_000,
    }
    metrics = (tmp_path / "version_0" / "metrics.csv").read_text()
    assert "eval/default-8/success_rate" in metrics and "rollout/return_mean" in metrics
    assert "select/score" in metrics and "select/best_iteration" in metrics
