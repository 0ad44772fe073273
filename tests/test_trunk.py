"""Frozen-trunk scoring (``msgrpo.lm.trunk``): the same log-probs and gradients as running every layer."""

from __future__ import annotations

import pytest
import torch
from test_grad_accumulation import _samples

from msgrpo.batching import minibatches
from msgrpo.lm.loading import LoraSettings
from msgrpo.lm.trunk import trunk_boundary
from msgrpo.loss import MSGRPOLoss
from msgrpo.update import accumulate, approx_kl_of

# a 3-layer tiny model with an adapter on its top layer: layers 0 and 1 are the frozen trunk
TINY3 = {"num_layers": 3}


def _pair(tiny_policy_factory, **kwargs):
    """The same adapted policy twice (same seed): scoring from the trunk, and running every layer."""
    from msgrpo.lm.models import TinySettings

    make = lambda cache: tiny_policy_factory(  # noqa: E731
        max_new_tokens=6, temperature=0.8, tiny=TinySettings(**TINY3), cache_trunk=cache,
        lora=LoraSettings(r=4, alpha=8, layers=[-1]), **kwargs,
    )  # fmt: skip
    cut, whole = make(True), make(False)
    with torch.no_grad():  # the adapter away from its zero init; the same weights in both
        for (name, a), b in zip(cut.named_parameters(), whole.parameters()):
            if "lora_B" in name:
                a.add_(0.3)
            b.copy_(a)
    return cut, whole


def _batch(policy, budget_rows):
    samples = _samples(policy, n=10)  # mixed prompt and completion lengths, some repeated sequences
    samples += samples[:3]  # identical sequences: deduplicated rows
    budget = budget_rows * max(s.num_tokens for s in samples)
    gen = torch.Generator().manual_seed(0)
    return minibatches(samples, 1, budget, policy.tokenizer.pad_token_id, gen)[0]


@pytest.mark.parametrize("share_prefill", [True, False])
def test_scores_and_gradients_match_running_every_layer(tiny_policy_factory, share_prefill):
    cut, whole = _pair(tiny_policy_factory, share_prefill=share_prefill)
    assert cut.trunk.boundary == 2 and whole.trunk.boundary is None
    mini = _batch(cut, budget_rows=3)
    assert len(mini.micro_batches) >= 3  # several micro-batches
    if share_prefill:
        assert any(cut.score_prefix_len(m) > 0 for m in mini.micro_batches)  # the shared-prefix path
    assert any(m.rows is not None for m in mini.micro_batches)  # deduplicated rows
    for micro in mini.micro_batches:
        a, b = cut.completion_logprobs(micro), whole.completion_logprobs(micro)
        assert "states" in micro.trunk  # kept for the later passes
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.entropy, b.entropy, atol=1e-5, rtol=0)
        torch.testing.assert_close(cut.reference_logprobs(micro), whole.reference_logprobs(micro), atol=1e-5, rtol=0)
    # gradients of the adapter through the whole loss (with an entropy bonus and a KL term), accumulated
    loss = MSGRPOLoss(clip_eps=0.2, kl_coef=0.1, entropy_coef=0.01)
    grads = []
    for policy in (cut, whole):
        policy.zero_grad(set_to_none=True)
        for micro in mini.micro_batches:
            micro.ref_logprobs = micro.per_sample(whole.reference_logprobs(micro))
        accumulate(policy, loss, mini, (mini.num_tokens, mini.num_sequences), lambda x: x.backward())
        grads.append({n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)
    assert all("lora_" in n and "layers.2." in n for n in grads[0])
    # the measuring pass (trust region, target_kl) from the same kept states
    assert approx_kl_of(cut, mini) == pytest.approx(approx_kl_of(whole, mini), abs=1e-6)


def test_states_are_computed_once_per_micro_batch_and_shared_by_its_copies(tiny_policy_factory, monkeypatch):
    from lightning.fabric.utilities.apply_func import move_data_to_device

    import msgrpo.lm.trunk

    cut, _ = _pair(tiny_policy_factory)
    micro = _batch(cut, budget_rows=100).micro_batches[0]
    calls = []
    outputs_of = msgrpo.lm.trunk.outputs_of

    def counting(*args):
        calls.append(1)
        return outputs_of(*args)

    monkeypatch.setattr(msgrpo.lm.trunk, "outputs_of", counting)
    copy = move_data_to_device(micro, torch.device("cpu"))  # what Lightning does to every batch
    assert copy is not micro and copy.trunk is micro.trunk
    cut.completion_logprobs(copy)
    cut.sampling_logprobs(micro)
    cut.reference_logprobs(micro)
    cut.completion_logprobs(micro).logprobs.sum().backward()
    assert len(calls) == 1


def test_it_switches_itself_off_where_it_cannot_hold(tiny_policy_factory):
    from msgrpo.lm.models import TinySettings

    full = tiny_policy_factory(tiny=TinySettings(**TINY3))
    assert trunk_boundary(full.model) == (None, "the first decoder layer is trained (full fine-tuning, or adapters "
                                                "on every layer)")  # fmt: skip
    every = tiny_policy_factory(tiny=TinySettings(**TINY3), lora=LoraSettings(r=4))
    assert every.trunk.boundary is None
    top = tiny_policy_factory(tiny=TinySettings(**TINY3), lora=LoraSettings(r=4, layers=[-1]))
    assert top.trunk.boundary == 2 and top.trunk.cut(lockstep=False) == 2
    with pytest.warns(UserWarning, match="frozen-trunk scoring is off: parameters are sharded"):
        assert top.trunk.cut(lockstep=True) is None
    with pytest.warns(UserWarning, match="frozen-trunk scoring is off: the first decoder layer is trained"):
        every.trunk.cut(lockstep=False)
    assert full.trunk.cut(lockstep=False) is None  # (full fine-tuning: nothing to say)
    # architectures the cut is not verified for (embeddings scaled in the forward, per-position layer kinds)
    config = top.model.get_base_model().model.config
    config.model_type = "granite"
    why = "the cut is verified for llama, mistral, qwen2, qwen3 models, not granite"
    assert trunk_boundary(top.model) == (None, why)
    config.model_type = "llama"
    config.layer_types = ["full_attention", "sliding_attention", "full_attention"]
    assert trunk_boundary(top.model)[0] is None
    config.layer_types = ["full_attention"] * 3
    assert trunk_boundary(top.model) == (2, "")
