"""The tiny preset: its frozen tokenizer."""

import pytest
import torch

from msgrpo.errors import ConfigError
from msgrpo.lm.loading import tokenizer_fingerprint
from msgrpo.lm.models import TinySettings, build_tiny_tokenizer

FROZEN_SHA256 = "50ec80388fa883b003510f9e6565175daafd7caa96e342d1a181fcaccc3ae956"


def test_the_tiny_tokenizer_is_frozen():
    # its ids never change with the games' text: old checkpoints keep meaning the same tokens
    assert tokenizer_fingerprint(build_tiny_tokenizer()) == FROZEN_SHA256
    assert build_tiny_tokenizer(seed=5).get_vocab() == build_tiny_tokenizer().get_vocab()
    # another size: trained by the tool on the built-in games' text, loaded from its file
    with pytest.raises(ConfigError, match="python -m msgrpo.tools.tiny_tokenizer --vocab-size 384"):
        build_tiny_tokenizer(0, 384)


def _small_tokenizer(tmp_path) -> str:
    from msgrpo.tools import tiny_tokenizer

    return tiny_tokenizer.main(["--vocab-size", "384", "--out", str(tmp_path / "tok.json")])


def test_the_tool_trains_another_size_and_the_preset_loads_it(tmp_path):
    path = _small_tokenizer(tmp_path)
    tokenizer = build_tiny_tokenizer(tokenizer_file=path)
    assert len(tokenizer) <= 384 and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.apply_chat_template([{"role": "user", "content": "up"}], tokenize=False).startswith("<|im_start|>")


def test_a_checkpoint_of_another_tokenizer_is_a_clear_error(tiny_policy_factory, tmp_path):
    from msgrpo.module import MSGRPOModule

    module = MSGRPOModule(tiny_policy_factory(max_new_tokens=1))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    small = TinySettings(vocab_size=384, tokenizer_file=_small_tokenizer(tmp_path))
    other = MSGRPOModule(tiny_policy_factory(max_new_tokens=1, tiny=small))
    with pytest.raises(ConfigError, match="trained with another tokenizer"):
        other.on_load_checkpoint(checkpoint)
    module.on_load_checkpoint(checkpoint)  # the same tokenizer: fine
    assert torch.is_tensor(checkpoint["state_dict"]["policy.model.lm_head.weight"])
