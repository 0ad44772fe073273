"""Rollout engines (``msgrpo.lm.engine``): the default and transformers' generate agree; the weight-sync hook
is called after every optimizer step and every trust-region restore."""

from __future__ import annotations

import pytest
import torch
from fast_fit import FAST_FIT, run_dir

from msgrpo.components.games import FrozenLake
from msgrpo.lm.engine import KVCacheEngine, TransformersGenerate
from msgrpo.update import TrustRegion

EOS = "<|im_end|>"


def _prompts(policy, n: int = 6):
    game = FrozenLake(map_name=None)
    env = game.make_env()
    messages = []
    for seed in range(n):
        game.reset(env, seed)
        messages.append(game.messages(env))
    return policy.encode(messages)


@pytest.mark.parametrize(
    "settings",
    [
        {"max_new_tokens": 5},  # the whole vocabulary
        {"max_new_tokens": 4, "allowed_tokens": ["left", "down", "right", "up", EOS], "response_prefix": "<action>"},
        {"max_new_tokens": 3, "top_k": 5, "temperature": 0.7},
    ],
    ids=["free", "allowed-with-eos", "top-k"],
)
def test_transformers_generate_gives_the_default_engines_tokens_and_logprobs(tiny_policy_factory, settings):
    policy = tiny_policy_factory(**settings)
    prompts = _prompts(policy)
    lengths = set()
    for greedy in (False, True):
        default = policy.generate(prompts, generator=torch.Generator().manual_seed(3), greedy=greedy)
        policy.engine = TransformersGenerate()
        other = policy.generate(prompts, generator=torch.Generator().manual_seed(3), greedy=greedy)
        policy.engine = KVCacheEngine()
        for a, b, la, lb in zip(default.completion_ids, other.completion_ids, default.logprobs, other.logprobs):
            assert torch.equal(a, b)
            torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)
            lengths.add(a.numel())
        assert default.texts == other.texts
    if "allowed_tokens" in settings:
        assert len(lengths) > 1  # some completions ended at EOS: mixed lengths compared


def test_fixed_steps_runs_every_pass_and_keeps_the_completions(tiny_policy_factory):
    # EOS is likely (a third of the allowed tokens): free decoding stops early, fixed steps must not
    allowed = ["left", "down", EOS]
    policy = tiny_policy_factory(max_new_tokens=4, allowed_tokens=allowed, response_prefix="<action>")
    policy.model.generation_config.repetition_penalty = 5.0  # a checkpoint's setting: must not act
    prompts = _prompts(policy)
    calls = []
    handle = policy.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    completions = []
    for engine in (KVCacheEngine(), TransformersGenerate()):
        policy.engine = engine
        free = policy.generate(prompts, generator=torch.Generator().manual_seed(1))
        calls.clear()
        fixed = policy.generate(prompts, generator=torch.Generator().manual_seed(1), fixed_steps=True)
        assert len(calls) == 4  # one pass per new token, though every completion may have ended
        assert all(torch.equal(a, b) for a, b in zip(free.completion_ids, fixed.completion_ids))
        completions.append(free.completion_ids)
    handle.remove()
    assert any(c.numel() < 4 for c in completions[0])  # some ended early
    assert all(torch.equal(a, b) for a, b in zip(*completions))  # the checkpoint's penalty acted on neither
    assert policy.model.generation_config.repetition_penalty == 5.0  # put back


def test_the_trust_region_reports_every_change_of_the_weights(tiny_policy):
    params = [p for p in tiny_policy.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    opt = torch.optim.SGD(params, lr=0.1)
    events = []
    kls = iter([1.0, 1.0, 0.001])  # two overshoots, undone, then a step that lands
    region = TrustRegion(max_kl=0.01, retries=3)
    landed, undone = region.step(opt, tiny_policy, lambda: next(kls), lambda: events.append(1))
    assert landed and undone == 2
    assert len(events) == 5  # three steps and two restores


class Recording(KVCacheEngine):
    """The default engine, recording every weight sync (``--model.policy.init_args.engine=test_engine.Recording``)."""

    events: list[str] = []

    def sync_weights(self, policy) -> None:
        Recording.events.append("sync")


@pytest.mark.slow
def test_the_module_syncs_the_engine_after_every_optimizer_step_and_restore(tmp_path, monkeypatch):
    from msgrpo.recipes import frozen_lake

    Recording.events = []
    step = torch.optim.AdamW.step

    def recorded(self, *args, **kwargs):
        Recording.events.append("step")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recorded)
    restore = __import__("msgrpo.update", fromlist=["Snapshot"]).Snapshot.restore

    def restored(self):
        Recording.events.append("restore")
        return restore(self)

    monkeypatch.setattr("msgrpo.update.Snapshot.restore", restored)
    args = ["fit", *FAST_FIT, *run_dir(tmp_path), "--trainer.max_epochs=2", "--data.num_minibatches=2",
            "--model.policy.init_args.engine=test_engine.Recording", "--model.loss.init_args.entropy_coef=0.01",
            "--model.rollback_kl=0.0005", "--model.rollback_retries=1"]  # fmt: skip
    frozen_lake.main(args)
    events = Recording.events
    assert "step" in events and "restore" in events
    for i, event in enumerate(events):  # every change of the weights is followed by a sync
        if event in ("step", "restore"):
            assert events[i + 1] == "sync", events[max(0, i - 3) : i + 3]
