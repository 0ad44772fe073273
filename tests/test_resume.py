"""Checkpoint and resume: 2 iterations + resume for 2 more = 4 iterations straight."""

from __future__ import annotations

import pytest
import torch
from fast_fit import FAST_FIT, run_dir

from msgrpo.recipes import frozen_lake

FAST = [*FAST_FIT, "--model.optimizer.init_args.weight_decay=0"]  # parameters move through gradients only


def _fit(root, epochs: int, *extra: str):
    return frozen_lake.main(
        [
            "fit",
            *FAST,
            f"--trainer.max_epochs={epochs}",
            *run_dir(root),
            *extra,
        ]
    )


def _last_iteration(cli) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in cli.trainer.callback_metrics.items()
        if k.startswith(("rollout/", "loss/")) and v.numel() == 1
    }


def _assert_same(straight, resumed) -> None:
    a = dict(straight.model.policy.named_parameters())
    b = dict(resumed.model.policy.named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    m_a, m_b = _last_iteration(straight), _last_iteration(resumed)
    assert m_a.keys() == m_b.keys() and "rollout/return_mean" in m_a
    assert m_b == pytest.approx(m_a, abs=1e-6)
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 4
    assert len(resumed.model.history) == len(straight.model.history)  # history travels in the checkpoint


@pytest.mark.slow
def test_resume_from_file_matches_straight_run(tmp_path):
    straight = _fit(tmp_path / "straight", 4)
    first = _fit(tmp_path / "split", 2)
    ckpt = tmp_path / "split" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 1 and "optimizer_states" in state
    assert "RolloutDataModule" in state and state["RolloutDataModule"]["seed"] == 0
    after_two, after_four = first.model.policy.parameters(), straight.model.policy.parameters()
    assert any(not torch.equal(p, q) for p, q in zip(after_two, after_four))
    resumed = _fit(tmp_path / "split", 4, f"--ckpt_path={ckpt}")
    _assert_same(straight, resumed)


@pytest.mark.slow
def test_lora_checkpoint_holds_adapter_only_and_resumes_with_last(tmp_path):
    lora = ["--model.policy.init_args.lora.r=4"]
    straight = _fit(tmp_path / "straight", 4, *lora)
    _fit(tmp_path / "split", 2, *lora)
    state = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["msgrpo"]["adapter_only"]
    policy_keys = [k for k in state["state_dict"] if k.startswith("policy.")]
    assert policy_keys and all("lora_" in k for k in policy_keys)
    resumed = _fit(tmp_path / "split", 4, *lora, "--ckpt_path=last")
    _assert_same(straight, resumed)
    lora_b = [p for n, p in resumed.model.policy.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # the adapter learned (and came back from the checkpoint)


@pytest.mark.slow
def test_resumed_full_finetune_keeps_the_initial_model_as_kl_anchor(tmp_path):
    from msgrpo.policy import LanguagePolicy

    kl = ["--model.loss.init_args.kl_coef=0.1"]
    _fit(tmp_path / "split", 2, *kl)
    resumed = _fit(tmp_path / "split", 3, *kl, "--ckpt_path=last")
    initial = LanguagePolicy(seed=0, max_new_tokens=1)  # the recipe's tiny model, before any training
    reference = dict(resumed.model.policy.reference.named_parameters())
    trained = dict(resumed.model.policy.model.named_parameters())
    for name, p in initial.model.named_parameters():
        assert torch.equal(reference[name], p), name
    assert any(not torch.equal(trained[n], p) for n, p in initial.model.named_parameters())
    assert resumed.model.history[-1]["loss/kl"] > 0
