"""GPU strategies: Lightning's ``fsdp`` (FSDP1), FSDP2 through ``ModelParallelStrategy``, and bf16 autocast.

Skipped without CUDA. With one GPU each run has one process (the code paths of the strategy still run);
with two or more GPUs, two processes.
"""

from __future__ import annotations

import pytest
import torch
from dist_helpers import fast_args, run_worker

from msgrpo.recipes import frozen_lake

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _devices() -> int:
    return min(2, torch.cuda.device_count())


def _check_ranks(reports: list[dict]) -> None:
    assert len({r["param_sha256"] for r in reports}) == 1
    assert len({r["generate_forwards"] for r in reports}) == 1
    assert len({r["train_forwards"] for r in reports}) == 1
    assert all(r["skipped_updates"] == 0 for r in reports)


def test_lightning_fsdp_strategy(tmp_path):
    n = _devices()
    reports = run_worker(
        tmp_path,
        "--trainer.accelerator=gpu",
        f"--trainer.devices={n}",
        "--trainer.strategy=fsdp",
        world=n,
    )
    assert reports[0]["strategy"] == "FSDPStrategy"
    _check_ranks(reports)


def test_fsdp2_model_parallel_strategy_bf16(tmp_path):
    n = _devices()
    reports = run_worker(
        tmp_path,
        "--trainer.accelerator=gpu",
        f"--trainer.devices={n}",
        "--trainer.strategy=ModelParallelStrategy",
        f"--trainer.strategy.data_parallel_size={n}",
        "--trainer.strategy.tensor_parallel_size=1",
        "--trainer.precision=bf16-mixed",
        world=n,
    )
    assert reports[0]["fixed_generation_steps"] == (n > 1)
    _check_ranks(reports)


def test_ddp_bf16_mixed_lora(tmp_path):
    n = _devices()
    reports = run_worker(
        tmp_path,
        "--trainer.accelerator=gpu",
        f"--trainer.devices={n}",
        "--trainer.strategy=ddp",
        "--trainer.precision=bf16-mixed",
        "--model.policy.init_args.lora.r=4",
        world=n,
    )
    _check_ranks(reports)


@pytest.mark.slow
def test_single_gpu_bf16_true_with_gradient_checkpointing(tmp_path):
    cli = frozen_lake.main(
        [
            "fit",
            *fast_args(tmp_path),
            "--trainer.accelerator=gpu",
            "--trainer.devices=1",
            "--trainer.precision=bf16-true",
            "--model.policy.init_args.gradient_checkpointing=true",
        ]
    )
    assert next(cli.model.policy.parameters()).device.type == "cuda"
    assert torch.isfinite(cli.trainer.callback_metrics["loss/total"])
