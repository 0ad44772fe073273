"""The multi-seed report and the ablation runner end to end, on tiny settings."""

import json

import pytest

from msgrpo.tools import ablate, report

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.check_val_every_n_epoch=1",
    "--data.num_groups=1",
    "--data.group_size=2",
    "--data.eval_episodes=2",
    "--data.eval_scenarios=[train]",
]


@pytest.mark.slow
def test_report_runs_seeds_and_writes_files(tmp_path, capsys):
    args = ["--seeds", "0", "1", "--out", str(tmp_path), "--reference-episodes", "5", "--", *TINY]
    summary = report.main([*args, "--data.sampler.init_args.num_episodes=2"])
    final = summary["final"]["eval/train/success_rate"]
    assert final["n"] == 2 and set(final["values"]) == {"seed_0", "seed_1"}
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["references"]) == {"random", "optimal"}
    assert (tmp_path / "curves.csv").exists() and (tmp_path / "final.csv").exists()
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["report"] == str(tmp_path)
    # aggregation of the finished runs gives the same numbers (a folder that never finished is left out)
    (tmp_path / "native-seed_9").mkdir()
    again = report.main(["--aggregate-only", "--out", str(tmp_path)])
    assert set(again["runs"]) == {"seed_0", "seed_1"}
    assert again["final"]["eval/train/success_rate"]["mean"] == final["mean"]


@pytest.mark.slow
def test_report_says_which_runs_failed_and_exits_non_zero(tmp_path, capsys):
    with pytest.raises(SystemExit, match="1 of 1 runs failed: seed_0"):
        report.main(["--seeds", "0", "--out", str(tmp_path), "--", *TINY, "--data.no_such_setting=1"])
    assert json.loads((tmp_path / "report.json").read_text())["failed"] == ["seed_0"]
    assert "no_such_setting" in (tmp_path / "native-seed_0.log").read_text()  # the run's own error, kept
    with pytest.raises(SystemExit):
        report.main(["--recipe", "no_such_recipe", "--out", str(tmp_path / "x")])  # refused before any run
    capsys.readouterr()


@pytest.mark.slow
def test_ablation_grid_table(tmp_path, capsys):
    results = ablate.main(
        ["--seeds", "0", "--out", str(tmp_path),
         "--variant", "aaw=sampler_aaw.yaml,--data.sampler.init_args.num_episodes=2",
         "--variant", "uniform=sampler_uniform.yaml,--data.sampler.init_args.num_episodes=1",
         "--variant", "all=sampler_all.yaml", "--", *TINY]
    )  # fmt: skip
    assert set(results) == {"aaw", "uniform", "all"}
    md = (tmp_path / "ablation.md").read_text()
    assert "| aaw | train |" in md and "| all | train |" in md
    assert (tmp_path / "all" / "seed_0").is_dir()
    capsys.readouterr()
