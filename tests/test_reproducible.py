"""``--reproducible`` pins what it claims, before any kernel runs, and refuses when it cannot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    "avx2" not in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else True,
    reason="the pinned path needs an x86-64 CPU with AVX2",
)

FIT = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))  # what the machine would choose: the switch must override it
from msgrpo.recipes import snake
from msgrpo.reproducible import mkl_cbwr_mode
root = sys.argv[2]
cli = snake.main(["fit", "--reproducible=true", "--trainer.max_epochs=2", "--trainer.limit_val_batches=0",
                  "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
                  "--trainer.enable_progress_bar=false",
                  "--data.num_groups=2", "--data.group_size=4", "--data.sampler.init_args.num_episodes=4",
                  f"--trainer.default_root_dir={root}"])
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "mkl": mkl_cbwr_mode(),
                  "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
                  "loss": [h["loss/total"] for h in cli.model.history if "loss/total" in h],
                  "entropy": [h["loss/entropy"] for h in cli.model.history if "loss/entropy" in h]}))
"""


def _run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    for name in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA"):
        full.pop(name, None)
    return subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_switch_pins_kernels_mkl_threads_and_algorithms_before_any_kernel_runs(tmp_path):
    # started on ATen's scalar kernels: the switch lands on AVX2 anyway, so no kernel ran before it
    runs = []
    for threads in (1, 3):
        done = _run(FIT, str(threads), str(tmp_path / str(threads)), ATEN_CPU_CAPABILITY="default")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "msgrpo: reproducible float path: ATEN_CPU_CAPABILITY=avx2" in done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for run in runs:
        assert run["capability"] == "AVX2" and run["threads"] == 2 and run["deterministic"]
        assert run["mkl"] in (None, 3 | 0x10000)  # compatible, strict (None: a torch without MKL)
    assert runs[0]["loss"] == runs[1]["loss"] and runs[0]["entropy"] == runs[1]["entropy"]  # to the digit
    assert len(runs[0]["loss"]) == 2


@pytest.mark.slow
def test_the_switch_refuses_a_process_whose_kernels_already_ran():
    code = """
import torch
from msgrpo.errors import ConfigError
from msgrpo.reproducible import pin_float_path
a = torch.randn(64, 64)
(a @ a).softmax(-1).sum()  # ATen and MKL have run: neither can be pinned any more
try:
    pin_float_path()
except ConfigError as err:
    print("refused:", err)
"""
    done = _run(code, ATEN_CPU_CAPABILITY="default")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused:" in done.stdout and "start Python with" in done.stdout
