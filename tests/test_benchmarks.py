"""Speed benchmarks run end to end on tiny settings (figures are checked for presence, never for speed),
and the shared prefill they measure samples from the same distribution as a plain prefill."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from fast_fit import SMALL_ROLLOUT

from msgrpo.components.games import FrozenLake

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name: str, argv: list[str], capsys) -> dict:
    result = load(name).main(["--threads", "0", *argv])  # 0: leave the test process's threads alone
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result  # the JSON figures are the last line
    return result


def assert_finite(result: dict, keys: list[str]) -> None:
    for key in keys:
        assert key in result, key
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]), (key, result[key])


def test_rollout_benchmark(capsys):
    argv = ["--groups", "2", "--group-size", "2", "--max-steps", "2", "--max-new-tokens", "2", "--repeats", "1"]
    result = run("rollout", argv, capsys)
    assert_finite(
        result,
        [
            "speedup_vs_sequential",
            "model_time_share",
            "episodes",
            "steps",
            "engine_wall_s",
            "sequential_wall_s",
            "prefix_sharing_speedup",
            "shared_prefill_speedup",
            "engine_vs_hf_generate",
            "engine_vs_hf_generate_batch",
        ],
    )
    assert result["episodes"] == 4 and result["sequential_episodes"] == 4
    assert 0 < result["model_time_share"] <= 1


@pytest.mark.parametrize("game", ["frozen_lake", "snake"])
def test_update_benchmark(capsys, game):
    argv = ["--groups", "1", "--group-size", "2", "--max-new-tokens", "4", "--token-budget", "1300", "--repeats", "1"]
    result = run("update", [*argv, "--game", game], capsys)
    assert result["game"] == game
    assert_finite(result, ["ratio", "real_tokens_per_s", "bare_tokens_per_s", "real_tokens", "bare_tokens"])
    assert result["real_micro_batches"] >= 2  # the budget splits the mini-batch
    assert result["ratio"] > 0
    assert_finite(result, ["dedupe_speedup", "deduped_s"])
    assert 0 < result["deduped_tokens_computed"] <= result["real_tokens"]  # never more work than without
    assert_finite(result, ["prefix_sharing_speedup", "unshared_s"])


def test_scaling_benchmark(capsys):
    argv = ["--groups", "1", "--group-sizes", "2", "3", "--max-steps", "1", "2", "--max-new-tokens", "2"]
    result = run("scaling", [*argv, "--repeats", "1"], capsys)
    assert_finite(result, ["slope_s_per_sample", "intercept_s", "r2", "update_slope_s_per_sample"])
    assert [(p["group_size"], p["max_steps"]) for p in result["points"]] == [(2, 1), (2, 2), (3, 1), (3, 2)]
    for p in result["points"]:  # a random model's fallback moves keep every episode to the step limit
        assert p["step_samples"] == p["group_size"] * p["max_steps"]
        assert_finite(p, ["rollout_s", "update_s", "iteration_s"])


@pytest.mark.slow
def test_linear_fit_is_exact_on_a_line():
    fit = load("scaling").linear_fit([1.0, 2.0, 4.0], [3.0, 5.0, 9.0])
    assert fit == pytest.approx({"slope": 2.0, "intercept": 1.0, "r2": 1.0})


def _prompts(policy, seeds: list[int]) -> list[torch.Tensor]:
    game = FrozenLake()
    env = game.make_env()
    messages = []
    for seed in seeds:
        game.reset(env, seed)
        if seed % 2:  # different lengths: the rest after the shared prefix is left padded
            game.act(env, "<action>right</action>")
        messages.append(game.messages(env))
    return policy.encode(messages)


def test_shared_prefill_samples_like_a_plain_prefill(tiny_policy_factory):
    """Prefilling the common prefix once and identical prompts once changes nothing but rounding."""
    policy = tiny_policy_factory(max_new_tokens=5)
    prompts = _prompts(policy, [0, 1, 0, 2, 1, 0])  # duplicates and different lengths
    assert policy.shared_prefix_len(prompts) >= 16
    out = {}
    for shared in (True, False):
        policy.share_prefill = shared
        out[shared] = policy.generate(prompts, generator=torch.Generator().manual_seed(3))
    for a, b, c, d in zip(out[True].completion_ids, out[False].completion_ids, out[True].logprobs, out[False].logprobs):
        assert torch.equal(a, b)
        assert torch.allclose(c, d, atol=1e-5)
    # the same prompt's rows draw their own samples
    assert len({tuple(out[True].completion_ids[i].tolist()) for i in (0, 2, 5)}) > 1


@pytest.mark.slow
def test_learning_snake_benchmark_reports_every_policy(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling `common`
    monkeypatch.setenv("MSGRPO_THREADS", str(torch.get_num_threads()))
    argv = ["--max-iterations", "1", "--episodes", "2", "--out", str(tmp_path), "--"]
    small = SMALL_ROLLOUT
    result = load("learning_snake").main([*argv, *small])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    assert result["iterations"] == 1 and result["eval_episodes"] == 2
    policies = {"initial", "initial_sampled", "trained", "trained_sampled", "random", "greedy"}
    assert set(result["panel_mean"]) == policies
    for policy in policies:
        assert set(result["scenarios"][policy]) == {"default-8", "long-20", "poison", "two-opponents"}
        for figures in result["scenarios"][policy].values():
            assert 0.0 <= figures["death_rate"] <= 1.0 and math.isfinite(figures["return_mean"])
    mean = result["panel_mean"]
    assert result["trained_beats_random"] == (mean["trained"]["return_mean"] > mean["random"]["return_mean"])
    assert result["trained_sampled_beats_random"] == (
        mean["trained_sampled"]["return_mean"] > mean["random"]["return_mean"]
    )
    assert mean["greedy"]["death_rate"] <= mean["random"]["death_rate"]  # the scripted player survives more
    assert set(result["margin_se"]) == {"default-8", "long-20", "poison", "two-opponents"}
    assert result["min_margin_se"] == min(result["margin_se"].values())
    assert result["met_target"] == (result["min_margin_se"] >= 3.0)


@pytest.mark.slow
def test_learning_benchmarks_run_a_grid_of_seeds_and_float_paths_each_in_its_own_process(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    small = SMALL_ROLLOUT
    argv = ["--max-iterations", "1", "--episodes", "2", "--seeds", "3", "4", "--float-paths", "native@1", "budget@1",
            "avx2@2", "--parallel", "2"]  # fmt: skip
    result = load("learning_frozen_lake").main([*argv, "--out", str(tmp_path), "--", *small])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    assert result["seeds"] == [3, 4] and result["n"] == 6
    assert result["float_paths"] == ["avx2@2", "budget@1", "native@1"]
    runs = {(r["seed"], r["float_path"], r["threads"]): r for r in result["runs"]}
    assert set(runs) == {(s, p, t) for s in (3, 4) for p, t in (("native", 1), ("budget", 1), ("avx2", 2))}
    for (seed, path, threads), run in runs.items():
        assert "error" not in run, run
        assert run["iterations"] == 1 and run["threads"] == threads  # the path's threads reached the run
        assert run["target"] == 0.95  # the classic map's (random maps: 0.5)
        assert run["met_target"] == (run["final_success_rate"] >= 0.95 and run["final_success_rate_sampled"] >= 0.95)
        name = f"{path}-{threads}t-seed_{seed}"
        assert (tmp_path / f"{name}.log").is_file() and (tmp_path / name).is_dir()
    (config,) = (tmp_path / "budget-1t-seed_3").rglob("config.yaml")
    assert "token_budget: 4096" in config.read_text()  # the budget path's argument reached the recipe
    passed = sum(r["met_target"] for r in result["runs"])
    assert result["met_target"] == passed and result["pass_rate"] == pytest.approx(passed / 6, abs=1e-4)
    low, high = result["pass_rate_ci95"]
    assert 0 <= low <= passed / 6 <= high <= 1
    assert result["summary"]["iterations"]["mean"] == 1.0 and result["summary"]["iterations"]["min"] == 1.0
    recorded = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(recorded) == 6  # each run appended as it finished


def test_wilson_interval_by_hand(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    common = load("common")
    low, high = common.wilson_interval(24, 24)  # all pass: the interval still admits failures
    # centre (1 + z²/48) / (1 + z²/24) = 0.93101, half-width z sqrt(z²/(4 n²)) / (1 + z²/24) = 0.06899
    assert high == pytest.approx(1.0) and low == pytest.approx(0.8620, abs=1e-4)
    low, high = common.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert common.float_path("native@1", 2) == ("native", 1) and common.float_path("avx2", 2) == ("avx2", 2)


@pytest.mark.slow
def test_iteration_benchmark_times_both_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling `common`
    monkeypatch.setenv("MSGRPO_THREADS", str(torch.get_num_threads()))
    small = ["--data.num_groups=2", "--data.group_size=4", "--data.sampler.init_args.num_episodes=4"]
    result = load("iteration").main(["--model", "tiny", "--iterations", "1", "--out", str(tmp_path), "--", *small])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    for name in ("before", "after"):
        figures = result[name]
        assert figures["iterations"] == 1 and figures["peak_memory_mb"] > 0
        assert_finite(figures, ["iteration_s", "rollout_s", "update_s", "update_tokens_per_s"])
        assert figures["iteration_s"] == pytest.approx(figures["rollout_s"] + figures["update_s"], abs=0.02)
        assert 0 <= figures["trunk_s"] <= figures["update_s"] and 0 <= figures["measure_s"] <= figures["update_s"]
    assert result["after"]["trunk_s"] > 0 and result["before"]["trunk_s"] == 0  # the frozen trunk, and not
    assert result["speedup"] == pytest.approx(
        result["before"]["iteration_s"] / result["after"]["iteration_s"], abs=0.01
    )
