"""benchmarks/memory.py runs (on the tiny model; the SmolLM2 figure is measured by hand: docs/results.md)."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_memory_benchmark_on_tiny(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--model", "tiny", "--max-new-tokens", "1", "--out", str(tmp_path)])
    assert out["episodes"] == 16 and 16 <= out["steps"] <= 128
    assert math.isfinite(out["peak_rss_gib"]) and out["peak_rss_gib"] > 0
    sys.modules.pop("common", None)
