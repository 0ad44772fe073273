"""Multi-seed aggregation maths, by hand."""

import json
import math

import pytest

from msgrpo.tools.report import aggregate, auc, fraction_of_reference, mean_ci, read_metrics, t975, write_report


def test_mean_ci_by_hand():
    r = mean_ci([0.2, 0.4, 0.9])
    # mean = 1.5 / 3 = 0.5 ; deviations -0.3, -0.1, 0.4 -> squares 0.09 + 0.01 + 0.16 = 0.26
    # sample std = sqrt(0.26 / 2) = 0.36056 ; half-width = t(2) * std / sqrt(3) = 4.303 * 0.36056 / 1.73205
    assert r["mean"] == pytest.approx(0.5)
    assert r["std"] == pytest.approx(math.sqrt(0.13))
    assert r["ci95"] == pytest.approx(4.303 * math.sqrt(0.13) / math.sqrt(3))
    assert mean_ci([0.7]) == {"mean": 0.7, "std": 0.0, "ci95": 0.0, "n": 1.0}
    assert t975(1) == 12.706 and t975(100) == 1.96
    with pytest.raises(ValueError):
        mean_ci([])


def test_auc_by_hand():
    # points (0, 0), (10, 1), (20, 1): trapezoids 10 * 0.5 + 10 * 1 = 15, normalised by the span 20
    assert auc({0: 0.0, 10: 1.0, 20: 1.0}) == pytest.approx(0.75)
    assert auc({5: 0.4}) == 0.4


def test_aggregate_by_hand():
    runs = {
        "a": {"eval/x/success_rate": {9: 0.0, 19: 0.5}, "rollout/return_mean": {0: 1.0}},
        "b": {"eval/x/success_rate": {9: 0.2, 19: 1.0}},
    }
    s = aggregate(runs)
    assert list(s["curves"]) == ["eval/x/success_rate"]  # only eval/ metrics
    first, last = s["curves"]["eval/x/success_rate"]
    assert (first["iteration"], first["mean"], first["best"]) == (9, pytest.approx(0.1), 0.2)  # best run is b
    assert last["mean"] == pytest.approx(0.75)
    # std of {0.5, 1.0} = sqrt(((−0.25)^2 + 0.25^2) / 1) = 0.35355 ; ci = 12.706 * 0.35355 / sqrt(2) = 3.1765
    assert last["std"] == pytest.approx(math.sqrt(0.125))
    assert last["ci95"] == pytest.approx(12.706 * math.sqrt(0.125) / math.sqrt(2))
    final = s["final"]["eval/x/success_rate"]
    assert final["best_run"] == "b" and final["values"] == {"a": 0.5, "b": 1.0}
    # AUC: a = (10 * 0.25) / 10 = 0.25 ; b = (10 * 0.6) / 10 = 0.6 ; mean 0.425
    assert s["auc"]["eval/x/success_rate"]["mean"] == pytest.approx(0.425)
    refs = {"random": {"x": {"success_rate": 0.1}}, "optimal": {"x": {"success_rate": 0.5}}}
    assert fraction_of_reference(s, refs) == {"x": pytest.approx(1.5)}


def test_read_metrics_and_write_report(tmp_path):
    run = tmp_path / "seed_0" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,eval/x/success_rate,loss/policy\n0,1,,0.5\n9,10,0.25,\n")
    m = read_metrics(tmp_path / "seed_0")
    assert m == {"loss/policy": {0: 0.5}, "eval/x/success_rate": {9: 0.25}}
    files = write_report(aggregate({"seed_0": m}), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["final"]["eval/x/success_rate"]["mean"] == 0.25
    assert all(f.exists() for f in files)
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "nothing")
