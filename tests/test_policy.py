"""LanguagePolicy: exact on-policy log-probs, LoRA, reference, loading errors."""

import pytest
import torch

from msgrpo.batching import collate
from msgrpo.components.games import FrozenLake
from msgrpo.errors import ConfigError
from msgrpo.lm.decoding import completion_logits
from msgrpo.policy import LanguagePolicy, LoraSettings
from msgrpo.types import StepSample


def _prompts(policy, n=3):
    game = FrozenLake()
    env = game.make_env()
    msgs = []
    for seed in range(n):
        game.reset(env, seed)
        if seed % 2:  # different prompt lengths -> left padding is exercised
            game.act(env, "<action>right</action>")
        msgs.append(game.messages(env))
    return policy.encode(msgs)


def _batch(policy, prompts, gen):
    samples = [StepSample(p, c, lp, 1.0) for p, c, lp in zip(prompts, gen.completion_ids, gen.logprobs)]
    return collate(samples, policy.tokenizer.pad_token_id)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 20}, {"temperature": 0.7, "top_p": 0.9}])
def test_rollout_logprobs_match_training_logprobs(tiny_policy_factory, kwargs):
    policy = tiny_policy_factory(max_new_tokens=6, **kwargs)
    prompts = _prompts(policy)
    gen = policy.generate(prompts, generator=torch.Generator().manual_seed(0))
    assert len(gen.completion_ids) == 3 and all(c.numel() >= 1 for c in gen.completion_ids)
    batch = _batch(policy, prompts, gen)
    scores = policy.completion_logprobs(batch)
    logp, entropy = scores.logprobs, scores.entropy
    mask = batch.completion_mask.bool()
    assert torch.allclose(logp[mask], batch.old_logprobs[mask], atol=1e-4)
    assert entropy.shape == logp.shape and (entropy[mask] > 0).all()
    assert logp.requires_grad and not entropy.requires_grad
    entropy_grad = policy.completion_logprobs(batch, entropy_grad=True).entropy  # for an entropy bonus
    assert entropy_grad.requires_grad and torch.allclose(entropy_grad.detach(), entropy)


def test_shared_prefix_scoring_matches_plain_scoring_with_gradients(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=3)
    prompts = _prompts(policy, n=4)  # several prompt lengths: left padding inside the rest is exercised
    assert len({p.numel() for p in prompts}) > 1
    batch = _batch(policy, prompts, policy.generate(prompts, generator=torch.Generator().manual_seed(1)))
    shared = policy.score_prefix_len(batch)
    lengths = [p.numel() for p in prompts]
    common = next(i for i in range(min(lengths)) if len({int(p[i]) for p in prompts}) > 1)
    assert shared == common > 16  # the system message and the fixed start of the observation

    def run(share: bool):
        policy.share_prefill = share
        policy.model.zero_grad()
        scores = policy.completion_logprobs(batch)
        logp, entropy = scores.logprobs, scores.entropy
        (logp * batch.completion_mask).sum().backward()
        grads = [p.grad.clone() for p in policy.model.parameters()]
        return logp.detach(), entropy, grads

    logp_s, ent_s, grads_s = run(True)
    logp_p, ent_p, grads_p = run(False)
    mask = batch.completion_mask.bool()
    assert torch.allclose(logp_s[mask], logp_p[mask], atol=1e-5)
    assert torch.allclose(ent_s[mask], ent_p[mask], atol=1e-5)
    for g_s, g_p in zip(grads_s, grads_p, strict=True):
        assert torch.allclose(g_s, g_p, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads_s)
    assert policy.score_prefix_len(batch) == 0  # share_prefill off
    policy.share_prefill, policy.lockstep = True, True  # sharded models: no data-dependent extra pass
    assert policy.score_prefix_len(batch) == 0


def test_allowed_tokens_constrain_sampling_and_scoring_exactly(tiny_policy_factory):
    moves = ["up", "down", "left", "right"]
    policy = tiny_policy_factory(max_new_tokens=2, allowed_tokens=moves)
    ids = [policy.tokenizer.encode(m, add_special_tokens=False)[0] for m in moves]
    prompts = _prompts(policy, n=4)
    gen = policy.generate(prompts, generator=torch.Generator().manual_seed(3))
    assert all(c.numel() == 2 and set(c.tolist()) <= set(ids) for c in gen.completion_ids)
    batch = _batch(policy, prompts, gen)
    scores = policy.completion_logprobs(batch)
    logp, entropy = scores.logprobs, scores.entropy
    mask = batch.completion_mask.bool()
    assert torch.allclose(logp[mask], batch.old_logprobs[mask], atol=1e-4)
    assert (entropy[mask] <= torch.log(torch.tensor(4.0)) + 1e-5).all()  # a distribution over 4 tokens
    # by hand: the first token's log-prob is its logit minus the logsumexp over the four allowed logits
    free = tiny_policy_factory(max_new_tokens=2)
    logits = completion_logits(free.model, batch, free.cache_arg, free.score_prefix_len(batch))[:, 0].float()
    first = batch.input_ids[:, -2]
    expected = logits.gather(-1, first[:, None]).squeeze(-1) - logits[:, ids].logsumexp(-1)
    assert torch.allclose(logp[:, 0], expected, atol=1e-5)


def test_allowed_tokens_must_be_single_tokens(tiny_policy_factory):
    with pytest.raises(ConfigError, match="exactly one token"):
        tiny_policy_factory(allowed_tokens=["up", "go north"])
    with pytest.raises(ConfigError, match="empty"):
        tiny_policy_factory(allowed_tokens=[])


def test_generation_is_seeded_and_greedy_is_deterministic(tiny_policy):
    prompts = _prompts(tiny_policy)
    a = tiny_policy.generate(prompts, generator=torch.Generator().manual_seed(7))
    b = tiny_policy.generate(prompts, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a.completion_ids, b.completion_ids))
    g1 = tiny_policy.generate(prompts, greedy=True)
    g2 = tiny_policy.generate(prompts[:1], greedy=True)  # batch composition does not change greedy output
    assert torch.equal(g1.completion_ids[0], g2.completion_ids[0])


def test_stops_at_eos_and_keeps_it(tiny_policy_factory):
    policy = tiny_policy_factory(max_new_tokens=5)
    eos = policy.tokenizer.eos_token_id

    def boost_eos(module, args, out):  # make EOS overwhelmingly likely
        out[..., eos] += 100.0
        return out

    policy.model.lm_head.register_forward_hook(boost_eos)
    gen = policy.generate(_prompts(policy))
    for ids in gen.completion_ids:
        assert ids.tolist() == [eos]


def test_tiny_preset_is_deterministic(tiny_policy_factory):
    a, b = tiny_policy_factory(seed=3), tiny_policy_factory(seed=3)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    c = tiny_policy_factory(seed=4)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_lora_trains_adapter_only_and_reference_is_base(tiny_policy_factory):
    base = tiny_policy_factory(max_new_tokens=3)
    policy = tiny_policy_factory(max_new_tokens=3, lora=LoraSettings(r=4, alpha=8))
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # move the adapter away from its zero init
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    prompts = _prompts(policy)
    gen = policy.generate(prompts, generator=torch.Generator().manual_seed(0))
    batch = _batch(policy, prompts, gen)
    ref = policy.reference_logprobs(batch)
    base_lp = base.completion_logprobs(batch).logprobs
    mask = batch.completion_mask.bool()
    assert torch.allclose(ref[mask], base_lp[mask], atol=1e-5)
    cur = policy.completion_logprobs(batch).logprobs
    assert not torch.allclose(cur[mask], ref[mask], atol=1e-3)


def test_full_finetune_reference_is_frozen_copy(tiny_policy):
    tiny_policy.enable_reference()
    prompts = _prompts(tiny_policy)
    gen = tiny_policy.generate(prompts, generator=torch.Generator().manual_seed(0))
    batch = _batch(tiny_policy, prompts, gen)
    before = tiny_policy.reference_logprobs(batch)
    with torch.no_grad():
        for p in tiny_policy.model.parameters():
            p.add_(0.01)
    assert torch.equal(tiny_policy.reference_logprobs(batch), before)
    assert "reference" not in dict(tiny_policy.named_children())  # not trained, not checkpointed


def test_local_directory_round_trip(tiny_policy, tmp_path):
    tiny_policy.model.save_pretrained(tmp_path)
    tiny_policy.tokenizer.save_pretrained(tmp_path)
    loaded = LanguagePolicy(str(tmp_path), max_new_tokens=2)
    assert loaded.tokenizer("<action>up</action>").input_ids == tiny_policy.tokenizer("<action>up</action>").input_ids
    for p, q in zip(loaded.model.parameters(), tiny_policy.model.parameters()):
        assert torch.equal(p, q)


def test_missing_tokenizer_chat_template_falls_back_with_warning(tiny_policy, tmp_path):
    tiny_policy.tokenizer.chat_template = None
    tiny_policy.model.save_pretrained(tmp_path)
    tiny_policy.tokenizer.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="ChatML fallback"):
        loaded = LanguagePolicy(str(tmp_path))
    assert "<|im_start|>" in loaded.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)


def test_loading_errors_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        LanguagePolicy("./no/such/model")
    with pytest.raises(ConfigError, match="holds no|cannot load"):
        LanguagePolicy(str(tmp_path))  # a directory with no model in it
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        LanguagePolicy("some-org/some-model")
    with pytest.raises(ConfigError, match="max_new_tokens"):
        LanguagePolicy(max_new_tokens=0)
    with pytest.raises(ConfigError, match="temperature"):
        LanguagePolicy(temperature=0)


def test_scoring_is_deterministic_in_training_mode_even_with_model_dropout(tiny_policy_factory):
    # Lightning puts modules in training mode for the update; the rollout sampled without dropout. With
    # the model's attention dropout at 0.5 the update must still score exactly what the rollout sampled.
    policy = tiny_policy_factory(max_new_tokens=3)
    for module in policy.model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    prompts = _prompts(policy)
    gen = policy.generate(prompts, generator=torch.Generator().manual_seed(0))
    batch = _batch(policy, prompts, gen)
    policy.train()
    assert policy.training and not policy.model.training
    mask = batch.completion_mask.bool()
    first = policy.completion_logprobs(batch).logprobs
    second = policy.completion_logprobs(batch).logprobs
    assert torch.equal(first, second)
    assert torch.allclose(first[mask], batch.old_logprobs[mask], atol=1e-5)


def test_gradient_checkpointing_keeps_dropout_off(tiny_policy_factory):
    from transformers.modeling_layers import GradientCheckpointingLayer

    policy = tiny_policy_factory(max_new_tokens=2, gradient_checkpointing=True)
    policy.train()
    layers = [m for m in policy.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(m.training for m in layers)  # what transformers checks before checkpointing
    others = [m for m in policy.model.modules() if not isinstance(m, GradientCheckpointingLayer)]
    assert not any(m.training for m in others)
    policy.eval()
    assert not any(m.training for m in policy.model.modules())


def test_lora_dropout_is_refused_with_the_reason(tiny_policy_factory):
    with pytest.raises(ConfigError, match="lora.dropout must be 0 .*on-policy"):
        tiny_policy_factory(lora=LoraSettings(r=4, dropout=0.1))
