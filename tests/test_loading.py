"""Loading (``msgrpo.lm.loading``): single-token checks, EOS ids, the cache keyword, the reference copy."""

import pytest
import torch

from msgrpo.errors import ConfigError
from msgrpo.lm.loading import LoraSettings, cache_argument, eos_ids, frozen_copy, single_token_ids


def test_single_token_ids(tiny_policy):
    tok = tiny_policy.tokenizer
    ids = single_token_ids(tok, ["up", "down", "up"])
    assert ids == sorted(
        {tok.encode("up", add_special_tokens=False)[0], tok.encode("down", add_special_tokens=False)[0]}
    )
    with pytest.raises(ConfigError, match="exactly one token"):
        single_token_ids(tok, ["go north"])
    with pytest.raises(ConfigError, match="empty"):
        single_token_ids(tok, [])


def test_eos_and_cache_argument(tiny_policy):
    assert tiny_policy.tokenizer.eos_token_id in eos_ids(tiny_policy.tokenizer, tiny_policy.model)
    assert cache_argument(tiny_policy.model) in ("cache", "past_key_values")


def test_frozen_copy_is_detached_and_frozen(tiny_policy):
    ref = frozen_copy(tiny_policy.model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    with torch.no_grad():
        next(tiny_policy.model.parameters()).add_(1.0)
    assert not torch.equal(next(ref.parameters()), next(tiny_policy.model.parameters()))


def test_lora_layers_adapt_only_the_named_decoder_layers(tiny_policy_factory):
    policy = tiny_policy_factory(lora=LoraSettings(r=2, layers=[-1]))  # the tiny model has 2 layers
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1." in n and "lora_" in n for n in trainable)
    # "all-linear" becomes the decoder layers' linear module names (peft needs names with a layer subset)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    every = tiny_policy_factory(lora=LoraSettings(r=2))
    assert {n.split(".layers.")[1][0] for n, p in every.model.named_parameters() if p.requires_grad} == {"0", "1"}
    for bad in ([2], [-3], []):
        with pytest.raises(ConfigError, match="lora.layers must name decoder layers in"):
            tiny_policy_factory(lora=LoraSettings(r=2, layers=bad))
