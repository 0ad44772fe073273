"""Gradient accumulation: how a mini-batch is split into micro-batches does not change its gradient."""

import pytest
import torch

from msgrpo.batching import minibatches
from msgrpo.components.games import FrozenLake
from msgrpo.loss import MSGRPOLoss
from msgrpo.module import MSGRPOModule, micro_batch_loss
from msgrpo.types import MiniBatch, StepSample


def _samples(policy, n: int = 12) -> list[StepSample]:
    """Step samples of varied prompt and completion lengths, off-policy enough to clip."""
    game = FrozenLake()
    env = game.make_env()
    messages = []
    for seed in range(n):
        game.reset(env, seed)
        for _ in range(seed % 3):
            game.act(env, "<action>right</action>")
        messages.append(game.messages(env))
    prompts = policy.encode(messages)
    gen = policy.generate(prompts, generator=torch.Generator().manual_seed(0))
    rng = torch.Generator().manual_seed(1)
    samples = []
    for i, (p, c, lp) in enumerate(zip(prompts, gen.completion_ids, gen.logprobs)):
        # completions of 1 to 6 tokens (the untrained model rarely ends early): padding inside micro-batches
        keep = 1 + (i * 5) % len(c)
        c, lp = c[:keep], lp[:keep]
        old = lp + 0.3 * torch.randn(lp.shape, generator=rng)  # ratios away from 1: clipping is active
        ref = lp - 0.2 * torch.rand(lp.shape, generator=rng)
        samples.append(StepSample(p, c, old, advantage=float(i % 5) - 2.0, ref_logprobs=ref))
    return samples


def _gradients(module: MSGRPOModule, batch: MiniBatch) -> dict[str, torch.Tensor]:
    """The gradient ``MSGRPOModule.training_step`` accumulates over the mini-batch's micro-batches."""
    module.policy.zero_grad(set_to_none=True)
    for micro in batch.micro_batches:
        out, _ = micro_batch_loss(module.policy, module.loss, micro, batch)
        out.loss.backward()
    return {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "loss",
    [MSGRPOLoss(), MSGRPOLoss(aggregation="sequence-mean"), MSGRPOLoss(clip_eps=0.1, kl_coef=0.5)],
    ids=["token-mean", "sequence-mean", "kl"],
)
def test_micro_batch_split_does_not_change_gradients(tiny_policy_factory, loss):
    policy = tiny_policy_factory(max_new_tokens=6, temperature=0.8)
    module = MSGRPOModule(policy, loss=loss)
    policy.train()
    samples = _samples(policy)
    pad = policy.tokenizer.pad_token_id
    longest = max(s.num_tokens for s in samples)
    whole, split = (
        minibatches(samples, 1, budget, pad, torch.Generator().manual_seed(0))[0]
        for budget in (100 * longest, 3 * longest)
    )
    assert len(whole.micro_batches) == 1 and len(split.micro_batches) >= 3
    assert len({s.completion_ids.numel() for s in samples}) >= 4 and len({s.prompt_ids.numel() for s in samples}) >= 3
    assert (whole.num_tokens, whole.num_sequences) == (split.num_tokens, split.num_sequences)
    g_whole, g_split = _gradients(module, whole), _gradients(module, split)
    assert g_whole.keys() == g_split.keys() and len(g_whole) > 0
    for name in g_whole:
        assert torch.allclose(g_whole[name], g_split[name], rtol=1e-4, atol=1e-6), name
    assert any(g.abs().sum() > 0 for g in g_whole.values())


def test_computing_repeated_sequences_once_does_not_change_gradients(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=6, temperature=0.8)
    module = MSGRPOModule(policy, loss=MSGRPOLoss(entropy_coef=0.01))
    policy.train()
    samples = _samples(policy, n=6)
    rng = torch.Generator().manual_seed(2)
    repeats = [  # the same sequences again, with their own rollout log-probs and advantages
        StepSample(
            s.prompt_ids,
            s.completion_ids,
            s.old_logprobs + 0.1 * torch.randn(s.old_logprobs.shape, generator=rng),
            -s.advantage,
        )
        for s in samples[:4]
    ]
    pad = policy.tokenizer.pad_token_id
    deduped, plain = (
        minibatches(samples + repeats, 1, 10**6, pad, torch.Generator().manual_seed(0), dedupe=d)[0]
        for d in (True, False)
    )
    (micro,) = deduped.micro_batches
    assert micro.input_ids.shape[0] == 6 and micro.advantages.shape[0] == 10  # 6 distinct rows, 10 samples
    g_dedupe, g_plain = _gradients(module, deduped), _gradients(module, plain)
    assert g_dedupe.keys() == g_plain.keys() and len(g_dedupe) > 0
    for name in g_dedupe:
        assert torch.allclose(g_dedupe[name], g_plain[name], rtol=1e-4, atol=1e-6), name


def test_packing_by_prefix_group_does_not_change_gradients(tiny_policy_factory):
    # a mixture's samples tagged with their game: micro-batches one game each against one micro-batch
    policy = tiny_policy_factory(max_new_tokens=6, temperature=0.8)
    module = MSGRPOModule(policy, loss=MSGRPOLoss())
    policy.train()
    samples = _samples(policy)
    for i, s in enumerate(samples):
        s.prefix_group = i % 3
    pad = policy.tokenizer.pad_token_id
    grouped = minibatches(samples, 1, 10**6, pad, torch.Generator().manual_seed(0))[0]
    assert len(grouped.micro_batches) == 3  # one per game, though the budget would take them all at once
    for s in samples:
        s.prefix_group = 0
    (single,) = minibatches(samples, 1, 10**6, pad, torch.Generator().manual_seed(0))[0].micro_batches
    whole = MiniBatch([single], grouped.num_tokens, grouped.num_sequences)
    g_grouped, g_whole = _gradients(module, grouped), _gradients(module, whole)
    assert g_grouped.keys() == g_whole.keys() and any(g.abs().sum() > 0 for g in g_whole.values())
    for name in g_whole:
        assert torch.allclose(g_grouped[name], g_whole[name], rtol=1e-4, atol=1e-6), name
