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
