"""The tiny preset: its frozen tokenizer."""

import pytest
import torch

from msgrpo.errors import ConfigError
from msgrpo.loading import tokenizer_fingerprint
from msgrpo.models import TinySettings, build_tiny_tokenizer, train_tiny_tokenizer

FROZEN_SHA256 = "50ec80388fa883b003510f9e6565175daafd7caa96e342d1a181fcaccc3ae956"


def test_the_tiny_tokenizer_is_frozen():
    # its ids never change with the games' text: old checkpoints keep meaning the same tokens
    assert tokenizer_fingerprint(build_tiny_tokenizer()) == FROZEN_SHA256
    assert build_tiny_tokenizer(seed=5).get_vocab() == build_tiny_tokenizer().get_vocab()
    # other sizes are trained on the built-in games' current text
    assert len(train_tiny_tokenizer(0, 384)) == len(build_tiny_tokenizer(0, 384)) <= 384


def test_a_checkpoint_of_another_tokenizer_is_a_clear_error(tiny_policy_factory):
    from msgrpo.module import MSGRPOModule

    module = MSGRPOModule(tiny_policy_factory(max_new_tokens=1))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    other = MSGRPOModule(tiny_policy_factory(max_new_tokens=1, tiny=TinySettings(vocab_size=384)))
    with pytest.raises(ConfigError, match="trained with another tokenizer"):
        other.on_load_checkpoint(checkpoint)
    module.on_load_checkpoint(checkpoint)  # the same tokenizer: fine
    assert torch.is_tensor(checkpoint["state_dict"]["policy.model.lm_head.weight"])
