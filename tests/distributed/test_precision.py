"""Precision plugins and gradient checkpointing: short single-process fits on the CPU."""

from __future__ import annotations

import pytest
import torch
from dist_helpers import fast_args

from msgrpo.module import MSGRPOModule
from msgrpo.recipes import frozen_lake

SHORT = ["--trainer.limit_val_batches=0"]  # 2 iterations (the first may carry no learning signal)


def _fit(tmp_path, *extra):
    return frozen_lake.main(["fit", *fast_args(tmp_path), *SHORT, *extra])


@pytest.fixture
def initial(monkeypatch) -> dict[str, torch.Tensor]:
    """Filled with the policy's parameters as training starts (after precision conversion)."""
    snapshot: dict[str, torch.Tensor] = {}
    on_fit_start = MSGRPOModule.on_fit_start

    def hook(self) -> None:
        snapshot.update({n: p.detach().float().clone() for n, p in self.policy.model.named_parameters()})
        on_fit_start(self)

    monkeypatch.setattr(MSGRPOModule, "on_fit_start", hook)
    return snapshot


def _changed(cli, initial) -> bool:
    now = dict(cli.model.policy.model.named_parameters())
    assert initial and now.keys() == initial.keys()
    return any(not torch.equal(now[k].detach().float(), p) for k, p in initial.items())


@pytest.mark.slow
@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16)])
def test_bf16_precision_fit(tmp_path, precision, dtype, initial):
    cli = _fit(tmp_path, f"--trainer.precision={precision}", "--model.max_grad_norm=0.5")
    assert next(cli.model.policy.parameters()).dtype == dtype
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["loss/total"]) and cli.model.guard.skipped == 0  # none skipped in the run
    assert _changed(cli, initial)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_fit(tmp_path, lora, initial):
    extra = ["--model.policy.init_args.gradient_checkpointing=true"]
    if lora:
        extra.append("--model.policy.init_args.lora.r=4")
    cli = _fit(tmp_path, *extra)
    model = cli.model.policy.model
    assert model.is_gradient_checkpointing
    assert cli.model.guard.skipped == 0  # no update skipped in the run
    if lora:  # lora_B starts at zero: it moved only if gradients reached the adapter through checkpointing
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    else:
        assert _changed(cli, initial)
