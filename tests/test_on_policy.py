"""No silent no-ops: every training option moves the weights, and its first update is exactly on-policy.

Each case trains the tiny Frozen Lake recipe for two iterations with one option changed and checks that
(1) the first update of each iteration scored the rollout's tokens exactly as they were sampled
(``loss/onpolicy_error``: the largest ``|log ratio|`` of the iteration's first mini-batch), (2) every
loss and metric is finite, and (3) the parameters changed. Several cases make completions of mixed
lengths (padding inside the micro-batches) under truncated or constrained sampling.
"""

from __future__ import annotations

import math

import pytest
import torch
from fast_fit import QUIET, run_dir

from msgrpo.cli import MSGRPOCLI, config_path

EOS = "<|im_end|>"
MOVES_AND_EOS = f"[left,down,right,up,'{EOS}']"
FREE = ["--model.policy.init_args.response_prefix=<action>", "--model.policy.init_args.max_new_tokens=4"]
MIXED = [*FREE, f"--model.policy.init_args.allowed_tokens={MOVES_AND_EOS}"]  # EOS allowed: mixed lengths

# one-token answers over the whole vocabulary: the untrained model names no move, so the format penalty
# varies the returns and every iteration has a learning signal (constrained to the moves, these tiny
# rollouts rarely reach the goal and an iteration with no signal makes no update at all)
FREE_ONE = ["--model.policy.init_args.allowed_tokens=null"]

CASES = {
    # the recipe as it is (answers constrained to the moves): the entropy bonus gives every update a gradient
    "recipe defaults": ["--model.loss.init_args.entropy_coef=0.01"],
    "unconstrained one-token answer": FREE_ONE,
    "allowed_tokens with EOS, 4 new tokens": MIXED,
    "top_k, mixed lengths": [*MIXED, "--model.policy.init_args.top_k=3"],
    "top_p and temperature, mixed lengths": [
        *MIXED,
        "--model.policy.init_args.top_p=0.8",
        "--model.policy.init_args.temperature=0.7",
    ],
    # (the untrained model names no move in the free vocabulary, so every advantage is 0: the entropy
    # bonus is what must move the weights through the truncated distribution)
    "top_k over the whole vocabulary": [
        *FREE,
        "--model.policy.init_args.top_k=20",
        "--model.loss.init_args.entropy_coef=0.05",
    ],
    "exploration floor": [*MIXED, "--model.policy.init_args.exploration_floor=0.3"],
    "kl to the initial model": [*MIXED, "--model.loss.init_args.kl_coef=0.2", "--model.policy.init_args.top_k=3"],
    "lora": [*MIXED, "--model.policy.init_args.lora.r=4", "--model.optimizer.init_args.lr=0.05"],
    "lora with kl": [*MIXED, "--model.policy.init_args.lora.r=4", "--model.loss.init_args.kl_coef=0.2"],
    "lora on the top layer only": [
        *MIXED,
        "--model.policy.init_args.lora.r=4",
        "--model.policy.init_args.lora.layers=[-1]",
        "--model.optimizer.init_args.lr=0.05",
    ],
    "action-only answer format": [*FREE_ONE, "--data.game.init_args.answer_format=action"],
    "training-scenario mixture": [*FREE_ONE, "--data.train_scenarios=[train,slippery-4x4]"],
    "gradient checkpointing": [*MIXED, "--model.policy.init_args.gradient_checkpointing=true"],
    "entropy bonus": [*MIXED, "--model.loss.init_args.entropy_coef=0.05"],
    # answers constrained to the four moves (advantages mostly 0) and a floor above ln 4 = 1.39 nats: every
    # token is below it, so it is the capped bonus that must move the weights
    "entropy floor": ["--model.loss.init_args.entropy_coef=0.05", "--model.loss.init_args.entropy_target=2.0"],
    "sequence mean": [*MIXED, "--model.loss.init_args.aggregation=sequence-mean"],
    "mini-batches and update epochs": [*MIXED, "--data.num_minibatches=3", "--data.update_epochs=2"],
    "tiny token budget": [*MIXED, "--data.token_budget=400"],
    "no prefix sharing": [*MIXED, "--model.policy.init_args.share_prefill=false"],
    "bf16-mixed": [*MIXED, "--trainer.precision=bf16-mixed"],
    # bf16 weights under the default 32-true precision: the weights' dtype alone decides the re-scoring
    "bf16 weights, 32-true": [*MIXED, "--model.policy.init_args.dtype=bfloat16"],
    "re-scored float32": [*MIXED, "--model.rescore_old_logprobs=true"],
    # an engine whose numerics differ (transformers' padded generate): the old log-probs are re-scored
    "re-scored: TransformersGenerate engine": [*MIXED, "--model.policy.init_args.engine=TransformersGenerate"],
    # LoRA on the top layer of a 3-layer model: the frozen trunk (layers 0-1) runs once per micro-batch
    "frozen trunk: lora on the top layer of three": [
        *MIXED,
        "--model.policy.init_args.lora.r=4",
        "--model.policy.init_args.lora.layers=[-1]",
        "--model.policy.init_args.tiny.num_layers=3",
        "--model.optimizer.init_args.lr=0.05",
        "--model.rollback_kl=0.5",
    ],
    "credit StepReward": [*FREE_ONE, "--data.credit_assigner=StepReward"],
    "credit DiscountedReturn": [*FREE_ONE, "--data.credit_assigner=DiscountedReturn"],
    "credit AnchorState": [*FREE_ONE, "--data.credit_assigner=AnchorState"],
    "credit TerminalOnly": [*FREE_ONE, "--data.credit_assigner=TerminalOnly"],
    "credit LeaveOneOut": [*FREE_ONE, "--data.credit_assigner=LeaveOneOut"],
    "sampler Uniform": [*FREE_ONE, "--data.sampler=Uniform", "--data.sampler.init_args.num_episodes=4"],
    "sampler All": [*FREE_ONE, "--data.sampler=All"],
    "sampler TopAbsAdvantage": [*FREE_ONE, "--data.sampler=TopAbsAdvantage", "--data.sampler.init_args.num_episodes=4"],
    "sampler GroupVarianceFilter": [*FREE_ONE, "--data.sampler=GroupVarianceFilter"],
    "sampler AAW successive": [
        *FREE_ONE,
        "--data.sampler.init_args.scheme=successive",
        "--data.sampler.init_args.reweight=false",
    ],
    "sampler AAW with replacement": [*FREE_ONE, "--data.sampler.init_args.scheme=replacement"],
    "sampler AAW without reweighting": [*FREE_ONE, "--data.sampler.init_args.reweight=false"],
}
# the rollout's incremental decoding and the update's whole-sequence pass agree exactly in float32; in bf16
# they round differently (up to 5.5e-3 on CPUs with AMX-BF16), so reduced precision re-scores the rollout's
# tokens with the update's pass (``rescore_old_logprobs``) and the first ratio is 1 there too
BOUND = 1e-4


def _fit(tmp_path, extra: list[str]) -> tuple[MSGRPOCLI, dict[str, torch.Tensor], set[int]]:
    args = [
        "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu",
        *QUIET,
        "--trainer.enable_checkpointing=false",
        "--trainer.limit_val_batches=0",
        *run_dir(tmp_path),
        "--data.num_groups=3",
        "--data.group_size=3",
        "--data.sampler.init_args.num_episodes=6",
        "--data.game.init_args.map_name=null",
        "--model.optimizer.init_args.weight_decay=0",
        "--model.target_kl=null",
        "--model.lr_scheduler=null",
        *extra,
    ]
    cli = MSGRPOCLI(default_config=config_path("frozen_lake.yaml"), args=args, run=False)
    before = {n: p.detach().clone() for n, p in cli.model.policy.named_parameters() if p.requires_grad}
    lengths: set[int] = set()  # completion lengths of every iteration's rollout
    make_iteration = cli.datamodule.make_iteration

    def spy(module, iteration):
        batches = make_iteration(module, iteration)
        lengths.update(s.completion_ids.numel() for e in cli.datamodule.last_episodes for s in e.steps)
        return batches

    cli.datamodule.make_iteration = spy
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, before, lengths


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_option_moves_weights_and_first_update_is_on_policy(tmp_path, name):
    cli, before, lengths = _fit(tmp_path, CASES[name])
    module = cli.model
    assert len(module.history) == 2
    checked = [row["loss/onpolicy_error"] for row in module.history if "loss/onpolicy_error" in row]
    assert checked and max(checked) <= BOUND, (name, checked)  # (an iteration with no signal
    for row in module.history:  # makes no update, so it has no first-update figure)
        for key, value in row.items():
            assert math.isfinite(value), (name, key, value)
    assert module.guard.skipped == 0
    after = dict(module.policy.named_parameters())
    moved = [n for n, p in before.items() if not torch.equal(p, after[n].detach())]
    assert moved, f"{name}: no parameter changed"
    if name.startswith("lora") or "frozen trunk" in name:
        assert all("lora_" in n for n in moved)
    if "frozen trunk" in name:
        assert module.policy.trunk.boundary == 2 and all(row["perf/trunk_s"] > 0 for row in module.history)
    mismatch = [row["rollout/logprob_mismatch"] for row in module.history if "rollout/logprob_mismatch" in row]
    if "bf16" in name:  # re-scored, and the rounding it removed is shown (small: same weights, same tokens)
        assert len(mismatch) == 2 and all(0 <= m < 0.05 for m in mismatch), mismatch
    elif "re-scored" in name:  # float32: the two passes agree
        assert len(mismatch) == 2 and all(0 <= m < 1e-5 for m in mismatch), mismatch
    else:
        assert not mismatch  # float32: no extra pass
    if "mixed lengths" in name or "EOS" in name:
        assert len(lengths) > 1, lengths  # padding really was inside the micro-batches


@pytest.mark.slow
def test_rollback_restores_parameters_and_optimizer_state_of_an_overshooting_update(tmp_path):
    # a tiny threshold and no retry: every update overshoots and is undone, so the weights end where they
    # started (a retry would aim inside the region with a step of about 1e-10 of the learning rate, and land)
    extra = [*MIXED, "--model.rollback_kl=1e-12", "--model.rollback_retries=0", "--data.num_minibatches=2"]
    cli, before, _ = _fit(tmp_path, extra)
    module = cli.model
    per_iteration = [row["loss/rollbacks"] for row in module.history]  # each iteration's own count
    assert module.rollbacks >= 1 and sum(per_iteration) == module.rollbacks and all(n >= 1 for n in per_iteration)
    after = dict(module.policy.named_parameters())
    assert all(torch.equal(p, after[n].detach()) for n, p in before.items())
    state = module.optimizers().optimizer.state
    assert all(float(s["step"]) == 0 for s in state.values()) or not state  # Adam's state restored too
    # a moderate threshold: some steps are retried at half the learning rate, and the ones that land stay
    # within it, so the approximate KL after every update of the iteration's first mini-batch is bounded
    cli, before, _ = _fit(tmp_path / "mid", [*MIXED, "--model.rollback_kl=0.002", "--data.num_minibatches=1"])
    after = dict(cli.model.policy.named_parameters())
    assert any(not torch.equal(p, after[n].detach()) for n, p in before.items())
    # a generous threshold never fires and the weights move
    cli, before, _ = _fit(tmp_path / "loose", [*MIXED, "--model.rollback_kl=10"])
    assert cli.model.rollbacks == 0
    after = dict(cli.model.policy.named_parameters())
    assert any(not torch.equal(p, after[n].detach()) for n, p in before.items())


@pytest.mark.slow
def test_no_signal_makes_no_step(tmp_path):
    # the untrained model never names a move on the fixed classic map with the first move as fallback:
    # every episode of a group plays the same and every advantage is 0, so Adam must not move the
    # weights (its momentum and weight decay would, with a zero gradient)
    cli, before, _ = _fit(
        tmp_path,
        [*FREE, "--data.game.init_args.map_name=4x4", "--data.game.init_args.fallback=first",
         "--model.optimizer.init_args.weight_decay=0.1"],
    )  # fmt: skip
    assert all(row["loss/no_signal_updates"] > 0 for row in cli.model.history)
    after = dict(cli.model.policy.named_parameters())
    assert all(torch.equal(p, after[n].detach()) for n, p in before.items())


@pytest.mark.slow
def test_an_exactly_zero_gradient_makes_no_step(tmp_path):
    # as above (every advantage 0), with an entropy floor far below the untrained model's entropy over the
    # whole vocabulary (about 6 nats): the capped bonus has gradient exactly 0 at every token, so the whole
    # gradient is 0 and AdamW must not step (its weight decay would move every weight)
    cli, before, _ = _fit(
        tmp_path,
        [*FREE, "--data.game.init_args.map_name=4x4", "--data.game.init_args.fallback=first",
         "--model.optimizer.init_args.weight_decay=0.1", "--model.loss.init_args.entropy_coef=0.05",
         "--model.loss.init_args.entropy_target=0.5"],
    )  # fmt: skip
    assert all(row["loss/entropy"] > 0.5 for row in cli.model.history)
    assert all(row["loss/no_signal_updates"] > 0 for row in cli.model.history)
    after = dict(cli.model.policy.named_parameters())
    assert all(torch.equal(p, after[n].detach()) for n, p in before.items())
    assert not cli.model.optimizers().optimizer.state  # Adam never stepped
