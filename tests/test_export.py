"""Export to a Hugging Face directory: logits round trip for full fine-tuning and LoRA (merged, adapter)."""

from __future__ import annotations

import json

import pytest
import torch
from fast_fit import FAST_FIT, run_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from msgrpo import export
from msgrpo.lm.decoding import left_pad
from msgrpo.recipes import frozen_lake

FAST = [*FAST_FIT, "--trainer.max_epochs=2"]


def _train(root, *extra):
    cli = frozen_lake.main(["fit", *FAST, *run_dir(root), *extra])
    (config,) = list(root.rglob("config.yaml"))
    return cli, root / "checkpoints" / "last.ckpt", config


def _inputs(policy):
    prompts = policy.encode([[{"role": "user", "content": "Where next?"}], [{"role": "user", "content": "Go"}]])
    ids, mask = left_pad(prompts, policy.tokenizer.pad_token_id)
    return prompts, ids, mask


@torch.no_grad()
def _logits(model, ids, mask):
    return model.eval()(input_ids=ids, attention_mask=mask).logits


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_export_round_trip_logits(tmp_path, lora):
    # LoRA's B matrices start at 0. The untrained model names no valid move, so every group's returns can
    # tie (all advantages 0): an entropy bonus gives the adapter a gradient whatever the returns
    # the LoRA run keeps the recipe's constrained answer, so its export must carry the allowed tokens
    moves = ["--model.policy.init_args.allowed_tokens=[left,down,right,up]"]
    extra = ["--model.policy.init_args.lora.r=4", "--model.loss.init_args.entropy_coef=0.01", *moves] if lora else []
    cli, ckpt, config = _train(tmp_path / "run", *extra)
    policy = cli.model.policy
    if lora:  # the adapter learned something, so merging changes the weights
        assert any(p.abs().sum() > 0 for n, p in policy.named_parameters() if "lora_B" in n)
    prompts, ids, mask = _inputs(policy)
    expected = _logits(policy.model, ids, mask)

    out = export.main(["--ckpt_path", str(ckpt), "--config", str(config), "--out", str(tmp_path / "hf")])
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(_logits(model, ids, mask), expected, atol=1e-5, rtol=1e-5)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where next?"}], add_generation_prompt=True, tokenize=False
    )
    assert tokenizer(text + policy.response_prefix, add_special_tokens=False)["input_ids"] == prompts[0].tolist()
    settings = json.loads((out / export.POLICY_FILE).read_text())
    assert settings["response_prefix"] == "<action>" and settings["lora"] == ("merged" if lora else None)
    assert settings["allowed_tokens"] == (["left", "down", "right", "up"] if lora else None)
    # the whole sampling distribution, the exploration floor included (it is part of the policy)
    assert settings["exploration_floor"] == policy.distribution.floor and settings["temperature"] == policy.temperature
    assert settings["allowed_token_ids"] == policy.distribution.allowed_ids


@pytest.mark.slow
def test_export_lora_adapter_only(tmp_path):
    from peft import PeftModel

    cli, ckpt, config = _train(tmp_path / "run", "--model.policy.init_args.lora.r=4")
    _, ids, mask = _inputs(cli.model.policy)
    expected = _logits(cli.model.policy.model, ids, mask)
    out = export.main(
        ["--ckpt_path", str(ckpt), "--config", str(config), "--out", str(tmp_path / "hf"), "--adapter-only"]
    )
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(out / "base")
    model = PeftModel.from_pretrained(base, out)
    torch.testing.assert_close(_logits(model, ids, mask), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_export_needs_lora_for_adapter_only(tmp_path, capsys):
    _, ckpt, config = _train(tmp_path / "run", "--trainer.max_epochs=1")
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt_path", str(ckpt), "--config", str(config), "--out", str(tmp_path / "x"), "--adapter-only"])
    assert exit_info.value.code == 2
    assert "LoRA" in capsys.readouterr().err
