"""The one multi-seed runner: each run its own process with its float path's environment."""

import argparse
import json
import sys

import pytest

from msgrpo.tools.runs import FLOAT_PATHS, Run, add_grid_arguments, float_path, grid, last_json_line, run_each

# a "run" that prints what its process was started with, and fails for seed 13
PROBE = (
    "import json, os, sys; seed = int(sys.argv[1]); print('noise'); "
    "print(json.dumps({'cap': os.environ.get('ATEN_CPU_CAPABILITY'), 'cbwr': os.environ.get('MKL_CBWR'), "
    "'omp': os.environ['OMP_NUM_THREADS'], 'msgrpo': os.environ['MSGRPO_THREADS'], 'met_target': True, "
    "'args': sys.argv[2:]})); sys.exit(3 if seed == 13 else 0)"
)


def test_grid_of_seeds_and_paths():
    parser = argparse.ArgumentParser()
    add_grid_arguments(parser)
    args = parser.parse_args(["--seeds", "0", "1", "--float-paths", "native@1", "avx2", "--threads", "2"])
    assert grid(args) == [Run(0, "native", 1), Run(1, "native", 1), Run(0, "avx2", 2), Run(1, "avx2", 2)]
    assert Run(3, "budget", 2).name == "budget-2t-seed_3"
    assert float_path("scalar@4", 2) == ("scalar", 4)
    with pytest.raises(SystemExit, match="unknown float path 'avx512'"):
        float_path("avx512", 2)


def test_each_run_gets_its_paths_environment_and_is_recorded_as_it_finishes(tmp_path):
    runs = [Run(0, "native", 1), Run(1, "avx2", 2), Run(13, "budget", 2)]

    def command(run):
        return [sys.executable, "-c", PROBE, str(run.seed), *FLOAT_PATHS[run.path][1]]

    results = run_each(runs, command, tmp_path, parallel=2)
    native, avx2, failed = results
    assert (native["cap"], native["omp"], native["msgrpo"]) == (None, "1", "1")
    assert (avx2["cap"], avx2["cbwr"], avx2["omp"]) == ("avx2", "AVX2", "2")
    assert failed["error"].startswith("exit 3") and failed["met_target"] is False and "args" not in failed
    assert [(r["seed"], r["float_path"], r["threads"]) for r in results] == [(0, "native", 1), (1, "avx2", 2),
                                                                              (13, "budget", 2)]  # fmt: skip
    assert all(r["wall_s"] >= 0 for r in results)
    lines = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in lines) == [0, 1, 13]  # appended one by one (in finishing order)
    assert (tmp_path / "avx2-2t-seed_1.log").read_text().startswith("noise\n")
    assert last_json_line(Run(1, "avx2", 2), tmp_path / "avx2-2t-seed_1.log")["args"] == []
    # a path's recipe arguments are the caller's to add: budget's token budget reached the failed run's argv
    assert "--data.token_budget=4096" in (tmp_path / "budget-2t-seed_13.log").read_text()


def test_thread_counts_paths_and_duplicates():
    assert Run(0, "native", None).name == "native-seed_0"
    assert float_path("reproducible", None) == ("reproducible", 2)  # it pins 2 threads whatever is asked
    for bad, why in [("native@x", "integer >= 1"), ("native@0", "integer >= 1"), ("reproducible@1", "pins 2")]:
        with pytest.raises(SystemExit, match=why):
            float_path(bad, 2)
    parser = argparse.ArgumentParser()
    add_grid_arguments(parser, default_threads=None)
    args = parser.parse_args(["--seeds", "0", "0", "--float-paths", "native", "native"])
    assert grid(args) == [Run(0, "native", None)]  # each run once: two would write the same folder


def test_no_run_inherits_a_float_path_from_the_caller(tmp_path, monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    runs = [Run(0, "native", None), Run(1, "avx2", None)]
    native, avx2 = run_each(runs, lambda run: [sys.executable, "-c", PROBE.replace("os.environ['MSGRPO_THREADS']",
                            "os.environ.get('MSGRPO_THREADS')"), str(run.seed)], tmp_path)  # fmt: skip
    assert (native["cap"], native["cbwr"], native["omp"], native["msgrpo"]) == (None, None, "3", None)
    assert (avx2["cap"], avx2["cbwr"]) == ("avx2", "AVX2")


def test_last_json_line_skips_lines_that_only_look_like_json(tmp_path):
    log = tmp_path / "run.log"
    log.write_text('{"a": 1}\n{not json, a dict printed by a library}\n[1]\ndone\n')
    assert last_json_line(Run(0, "native", 1), log) == {"a": 1}
    log.write_text("no json at all\n")
    assert last_json_line(Run(0, "native", 1), log) == {}


def test_report_puts_the_float_paths_arguments_after_the_users(tmp_path, monkeypatch):
    """An overlay in the user's arguments must not undo the budget path's token budget (the later wins)."""
    from msgrpo.tools import report

    seen = {}

    def fake_run_each(runs, command, out, parallel=1, result=None):
        seen.update({run.name: command(run) for run in runs})
        return [{"error": "not run", "met_target": False, **run.tag()} for run in runs]

    monkeypatch.setattr(report, "run_each", fake_run_each)
    overlay = ["--config", "ov.yaml"]
    dirs, walls, failed = report.run_seeds("frozen_lake", [0], tmp_path, overlay, ["native", "budget@1"])
    assert (dirs, walls) == ({}, {}) and failed == ["native-seed_0", "budget-1t-seed_0"]
    budget = seen["budget-1t-seed_0"]
    assert budget.index("--data.token_budget=4096") > budget.index("ov.yaml")
    assert "--data.token_budget=4096" not in seen["native-seed_0"]
