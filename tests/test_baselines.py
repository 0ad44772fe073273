"""The baselines CLI: ``python -m msgrpo.tools.baselines <game> --policy ...``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from msgrpo.tools.baselines import main

KEYS = {"success_rate", "return_mean", "return_stderr", "invalid_action_rate", "episode_len"}


def run_cli(capsys, *argv: str) -> tuple[dict, str, str]:
    assert main(list(argv)) == 0
    out, err = capsys.readouterr()
    return json.loads(out.strip().splitlines()[-1]), out, err


def test_frozen_lake_optimal_prints_table_then_json(capsys):
    scenarios = "nonslip-4x4,slippery-4x4"
    payload, out, err = run_cli(
        capsys, "frozen_lake", "--policy", "optimal", "--episodes", "10", "--scenarios", scenarios
    )
    assert set(payload) == {"policy", "game", "scenarios"}
    assert payload["policy"] == "optimal" and payload["game"] == "frozen_lake"
    assert list(payload["scenarios"]) == ["nonslip-4x4", "slippery-4x4"]
    for stats in payload["scenarios"].values():
        assert set(stats) == KEYS
    assert payload["scenarios"]["nonslip-4x4"]["success_rate"] == 1.0
    assert out.splitlines()[0].startswith("scenario") and "nonslip-4x4" in out.splitlines()[2]
    progress = err.strip().splitlines()
    assert len(progress) == 2 and "nonslip-4x4" in progress[0] and "slippery-4x4" in progress[1]


def test_default_panel_and_seed(capsys):
    payload, _, _ = run_cli(capsys, "snake", "--policy", "greedy", "--episodes", "3")
    assert list(payload["scenarios"]) == ["default-8", "long-20", "poison", "two-opponents"]
    same, _, _ = run_cli(capsys, "snake", "--policy", "random", "--episodes", "5", "--seed", "7")
    again, _, _ = run_cli(capsys, "snake", "--policy", "random", "--episodes", "5", "--seed", "7")
    assert same == again and same["policy"] == "random" and same["game"] == "snake"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frozen_lake", "--policy", "greedy"], "does not play frozen_lake"),
        (["snake", "--policy", "optimal"], "does not play snake"),
        (["chess", "--policy", "random"], "unknown game"),
        (["snake", "--policy", "smart"], "does not play snake"),
        (["snake", "--policy", "random", "--scenarios", "nope"], "unknown scenario"),
        (["snake", "--policy", "random", "--scenarios", ","], "no scenario"),
        (["snake", "--policy", "random", "--episodes", "0"], "episodes"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("error:")


@pytest.mark.slow
def test_module_entry_point_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "msgrpo.tools.baselines", "snake", "--policy", "optimal"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
