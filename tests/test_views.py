"""Seeing the agent play: transcripts, replay frames and GIFs, curves, TensorBoard, the progress bar."""

import json

import pytest
from fast_fit import FAST_FIT, run_dir
from PIL import Image

from msgrpo.observe import transcripts
from msgrpo.observe.curves import REFERENCES_FILE
from msgrpo.recipes import snake
from msgrpo.tools import plot, replay

SNAKE_FIT = [
    "fit", *FAST_FIT, "--trainer.max_epochs=2", "--trainer.check_val_every_n_epoch=2",
    "--trainer.limit_val_batches=2", "--data.eval_episodes=3", "--data.log_episodes=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def snake_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("snake")
    cli = snake.main([*SNAKE_FIT, *run_dir(root)])
    return root, cli


@pytest.mark.slow
def test_transcripts_are_written_and_parse_back(snake_run):
    root, cli = snake_run
    log_dir = root / "version_0"
    evals = transcripts.read(log_dir / "transcripts" / "eval.jsonl")
    assert {r["scenario"] for r in evals} == {"default-8", "long-20"}  # the two scenarios evaluated
    assert all(r["split"] == "eval" and r["iteration"] == 1 for r in evals)
    assert len(evals) == 2 * 2  # model.transcripts (2) episodes per scenario
    first = evals[0]
    assert first["seed"] == 1_000_000 and first["length"] == len(first["steps"]) >= 1
    assert first["outcome"] in ("terminated", "truncated")
    assert abs(sum(s["reward"] for s in first["steps"]) - first["return"]) < 1e-6
    step = first["steps"][0]
    assert step["observation"].startswith("Round 1 of 8.") and step["action"] in ("up", "down", "left", "right")
    train = transcripts.read(log_dir / "transcripts" / "train.jsonl")
    assert [r["iteration"] for r in train] == [0, 0, 1, 1]  # data.log_episodes (2) per iteration


@pytest.mark.slow
def test_fit_draws_curves_with_the_reference_players(snake_run):
    root, _ = snake_run
    log_dir = root / "version_0"
    assert (log_dir / "curves.png").is_file()
    references = json.loads((log_dir / REFERENCES_FILE).read_text())
    assert set(references) == {"random", "greedy"} and set(references["random"]) == {"default-8", "long-20"}
    redrawn = plot.main([str(log_dir), "--out", str(root / "again.png")])
    assert Image.open(redrawn).size[0] > 500


@pytest.mark.slow
def test_replay_prints_frames_and_writes_a_gif(snake_run, tmp_path, capsys):
    root, _ = snake_run
    (config,) = list(root.rglob("config.yaml"))
    gif = tmp_path / "snake.gif"
    episodes = replay.main(
        ["--ckpt_path", str(root / "checkpoints" / "last.ckpt"), "--config", str(config),
         "--scenario", "default-8", "--episodes", "2", "--gif", str(gif), "--delay", "0"]
    )  # fmt: skip
    out = capsys.readouterr().out
    states = sum(e.length + 1 for e in episodes)  # every state an episode passes through, its end included
    assert out.count("--- seed ") == states and "> completion: " in out and "> end (" in out
    with Image.open(gif) as image:
        assert image.n_frames == states


@pytest.mark.slow
def test_replay_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        replay.main(["--recipe", "snake", "--scenario", "moon"])
    assert exit_info.value.code == 2 and "not in the panel" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_gets_metrics_transcripts_and_boards(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    snake.main([*SNAKE_FIT, *run_dir(tmp_path), "--trainer.logger=TensorBoardLogger"])
    (events,) = list(tmp_path.rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "rollout/return_mean" in tags["scalars"] and "eval/default-8/success_rate" in tags["scalars"]
    assert "transcripts/eval/default-8/text_summary" in tags["tensors"]
    assert "transcripts/train/text_summary" in tags["tensors"]
    assert "boards/eval/default-8" in tags["images"]
    text = acc.Tensors("transcripts/eval/default-8/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "seed 1000000" in text and "First observation" in text


@pytest.mark.slow
def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install wandb to run this test)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    snake.main([*SNAKE_FIT, *run_dir(tmp_path), "--trainer.logger=WandbLogger"])
    assert list(tmp_path.rglob("*.wandb"))


@pytest.mark.slow
def test_the_progress_bar_counts_iterations(tmp_path, capsys):
    snake.main(["fit", *[a for a in FAST_FIT if "progress_bar" not in a], *run_dir(tmp_path),
                "--trainer.max_epochs=3"])  # fmt: skip
    err = capsys.readouterr().err
    assert "MS-GRPO: 100%" in err and "3/3" in err
    for name in ("success=", "return=", "invalid=", "s/it="):
        assert name in err
