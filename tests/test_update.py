"""The update's named parts (``msgrpo.update``), each without a Trainer."""

import math

import pytest
import torch
from test_grad_accumulation import _samples

from msgrpo.batching import minibatches
from msgrpo.loss import MSGRPOLoss
from msgrpo.types import MicroBatch, MiniBatch
from msgrpo.update import (
    Snapshot,
    TrustRegion,
    UpdateStats,
    accumulate,
    approx_kl_of,
    data_parallel_normalisers,
    grads_finite,
    has_signal,
)


def _mini(policy, n=6, budget_rows=2):
    samples = _samples(policy, n)
    budget = budget_rows * max(s.num_tokens for s in samples)
    return minibatches(samples, 1, budget, policy.tokenizer.pad_token_id, torch.Generator().manual_seed(0))[0]


def test_data_parallel_normalisers_by_hand():
    batch = MiniBatch([], num_tokens=30, num_sequences=5)
    assert data_parallel_normalisers(batch, 1, lambda t: t) == (30.0, 5.0)
    # 2 ranks: rank 0 holds 30 tokens / 5 samples, rank 1 (the reduce adds its) 10 / 3: (40 / 2, 8 / 2)
    assert data_parallel_normalisers(batch, 2, lambda t: t + torch.tensor([10.0, 3.0], dtype=t.dtype)) == (20.0, 4.0)


def test_has_signal():
    zero = MicroBatch.blank(0)
    real = MicroBatch(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), torch.ones(1, 1),
                      torch.zeros(1, 1), torch.tensor([0.5]))  # fmt: skip
    assert not has_signal(MiniBatch([zero], 0, 0), MSGRPOLoss())
    assert has_signal(MiniBatch([zero, real], 1, 1), MSGRPOLoss())
    real.advantages.zero_()
    assert not has_signal(MiniBatch([real], 1, 1), MSGRPOLoss())
    assert has_signal(MiniBatch([real], 1, 1), MSGRPOLoss(entropy_coef=0.1))  # the entropy term has a gradient
    assert has_signal(MiniBatch([real], 1, 1), MSGRPOLoss(kl_coef=0.1))


def test_accumulate_sums_every_micro_batch_and_its_stats(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=4)
    mini = _mini(policy)
    assert len(mini.micro_batches) >= 2
    calls = []
    stats = accumulate(
        policy, MSGRPOLoss(), mini, (mini.num_tokens, mini.num_sequences), lambda loss: calls.append(loss)
    )
    assert len(calls) == len(mini.micro_batches) and stats.finite
    assert stats.tokens == mini.num_tokens
    assert stats.loss == pytest.approx(sum(float(c) for c in calls), abs=1e-6)
    metrics = stats.metrics()
    assert set(metrics) >= {"loss/total", "loss/policy", "loss/approx_kl", "loss/ratio_mean", "loss/entropy"}
    assert metrics["loss/entropy"] > 0


def test_update_stats_token_means_by_hand():
    stats = UpdateStats(tokens=4, sums={"loss/kl": 2.0, "loss/ratio_mean": 4.4})
    assert stats.mean("loss/kl") == 0.5 and stats.mean("loss/ratio_mean") == pytest.approx(1.1)
    assert UpdateStats().mean("loss/kl") == 0.0  # no token: no division by zero
    expected = {"loss/total": 0.0, "loss/policy": 0.0, "loss/kl": 0.5, "loss/ratio_mean": pytest.approx(1.1)}
    assert stats.metrics() == expected


def test_update_stats_advantage_mean_counts_real_tokens():
    # two samples: advantage +1 on 3 real tokens, -1 on 1 real token (padding not counted): (3 - 1) / 4
    stats = UpdateStats()
    out = MSGRPOLoss()(
        torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.tensor([[1, 1, 1], [1, 0, 0]]),
        num_tokens=4, num_sequences=2,
    )  # fmt: skip
    stats.add(out, torch.zeros(2, 3), torch.tensor([[1, 1, 1], [1, 0, 0]]), torch.tensor([1.0, -1.0]))
    assert stats.tokens == 4 and stats.metrics()["loss/advantage_mean"] == pytest.approx(0.5)


def test_grads_finite(tiny_policy):
    assert grads_finite(tiny_policy)  # no gradient at all
    p = next(tiny_policy.parameters())
    p.grad = torch.zeros_like(p)
    assert grads_finite(tiny_policy)
    p.grad[0] = float("nan")
    assert not grads_finite(tiny_policy)


def test_snapshot_restores_parameters_and_optimizer_state(tiny_policy):
    opt = torch.optim.AdamW(tiny_policy.parameters(), lr=0.1)
    for p in tiny_policy.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # some optimizer state
    snapshot = Snapshot.take(tiny_policy, opt)
    before = [p.detach().clone() for p in tiny_policy.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in tiny_policy.parameters()]
    opt.step()
    opt.step()
    snapshot.restore()
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_policy.parameters()))
    assert all(torch.equal(m, opt.state[p]["exp_avg"]) for m, p in zip(moments, tiny_policy.parameters()))
    opt.step()  # restoring twice from the same snapshot gives the same state (the step does not mutate it)
    snapshot.restore()
    assert all(torch.equal(m, opt.state[p]["exp_avg"]) for m, p in zip(moments, tiny_policy.parameters()))


def test_trust_region_retries_smaller_and_never_lands_outside(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=4)
    mini = _mini(policy)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    accumulate(policy, MSGRPOLoss(), mini, (mini.num_tokens, mini.num_sequences), lambda loss: loss.backward())
    # the recorded samples are off-policy by construction (old log-probs perturbed): measure the KL the
    # step adds on top of where the policy starts
    start = approx_kl_of(policy, mini)
    landed, undone = TrustRegion(max_kl=start + 0.01, retries=6).step(opt, policy, lambda: approx_kl_of(policy, mini))
    assert landed and approx_kl_of(policy, mini) <= start + 0.01
    assert opt.param_groups[0]["lr"] == 3e-3  # the learning rate is back to its own value
    before = [p.detach().clone() for p in policy.parameters()]
    landed, undone = TrustRegion(max_kl=start * 1e-3, retries=2).step(opt, policy, lambda: approx_kl_of(policy, mini))
    assert not landed and undone == 3
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_trust_region_undoes_a_step_that_pushes_every_sampled_token_out_of_the_top_k(tiny_policy_factory):
    # top_k=2 and a large step against the sampled tokens: for some samples every sampled token falls out
    # of the current top-2 (log-prob -inf). Measured on those samples, such a step used to read as KL 0 (the
    # tokens were left out) and landed; counted with the bounded log-ratio it is far outside the region.
    from msgrpo.loss import approx_kl

    policy = tiny_policy_factory(max_new_tokens=2, top_k=2)
    params = [p for p in policy.parameters() if p.requires_grad]
    pad = policy.tokenizer.pad_token_id

    def on_policy_batch(samples):
        mini = minibatches(samples, 1, 10**6, pad, torch.Generator().manual_seed(0))[0]
        for micro in mini.micro_batches:
            micro.old_logprobs = micro.per_sample(policy.completion_logprobs(micro).logprobs.detach())
            micro.advantages = torch.full_like(micro.advantages, -1.0)
        return mini

    def big_step(mini):
        opt = torch.optim.SGD(params, lr=100.0)
        opt.zero_grad()
        loss = MSGRPOLoss(clip_eps=1e9)
        accumulate(policy, loss, mini, (mini.num_tokens, mini.num_sequences), lambda x: x.backward())
        return opt

    samples = _samples(policy, 8)
    before = [p.detach().clone() for p in params]
    big_step(on_policy_batch(samples)).step()
    with torch.no_grad():
        exited = [bool(torch.isneginf(policy.completion_logprobs(on_policy_batch([s]).micro_batches[0]).logprobs)
                  .all()) for s in samples]  # fmt: skip
        for p, b in zip(params, before):
            p.copy_(b)
    gone = [s for s, e in zip(samples, exited) if e]
    assert gone, "no sample had all its tokens pushed out: make the step larger"
    opt = big_step(on_policy_batch(samples))  # the same step again ...
    measured = on_policy_batch(gone)  # ... measured on the samples it pushes out entirely
    landed, undone = TrustRegion(max_kl=0.05, retries=0).step(opt, policy, lambda: approx_kl_of(policy, measured))
    assert not landed and undone == 1
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    opt.step()  # the same step, taken: the measure is the bounded log-ratio's term at every token
    micro = measured.micro_batches[0]
    with torch.no_grad():
        logp = micro.per_sample(policy.completion_logprobs(micro).logprobs)
    total, count = approx_kl(logp, micro.old_logprobs, micro.completion_mask)
    assert count == int(micro.completion_mask.sum()) and total / count == pytest.approx(math.exp(-20) + 19, rel=1e-5)
