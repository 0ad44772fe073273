"""Built-in model presets that need no network.

* ``"tiny"``: a Llama-shaped causal LM (hidden 64, 2 layers) with random weights, and a byte-level BPE
  tokenizer trained in-process on the built-in games' own text, with a ChatML chat template. Everything
  is deterministic from a seed, so a checkpoint's weights always meet the same tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from msgrpo.errors import ConfigError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, the format of Qwen2.5 and SmolLM2; also the documented fallback for tokenizers without one."""

# Qwen2's pre-tokenizer split pattern: reloads through Qwen2Tokenizer give identical ids.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TAG_TOKENS = ["<think>", "</think>", "<action>", "</action>"]


FROZEN_TOKENIZER = "tiny_tokenizer.json"
"""The tiny preset's tokenizer as trained on the built-in games' text (``train_tiny_tokenizer(0, 512)``),
frozen in ``msgrpo/assets``: rewording a game's rules never changes the token ids of existing checkpoints
(checkpoints also record the tokenizer's :func:`~msgrpo.lm.loading.tokenizer_fingerprint`)."""
FROZEN_VOCAB_SIZE = 512


@dataclass
class TinySettings:
    """Shape of the tiny offline preset.

    Attributes:
        vocab_size: BPE vocabulary size (bytes + merges + special tokens): the frozen tokenizer's 512, or
            another tokenizer's given by ``tokenizer_file``.
        hidden_size: Model width.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        intermediate_size: MLP width.
        initializer_range: Standard deviation of the random initial weights. Larger than the usual 0.02,
            with which the model needed more updates to learn to read the few prompt tokens that describe
            the state.
        tokenizer_file: A tokenizer JSON written by ``python -m msgrpo.tools.tiny_tokenizer`` (another
            vocabulary size); None: the frozen one.
    """

    vocab_size: int = FROZEN_VOCAB_SIZE
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    initializer_range: float = 0.05
    tokenizer_file: str | None = None


def build_tiny_tokenizer(
    seed: int = 0, vocab_size: int = FROZEN_VOCAB_SIZE, tokenizer_file: str | None = None
) -> PreTrainedTokenizerFast:
    """The tiny preset's byte-level BPE tokenizer: the frozen one (``msgrpo/assets``), or one trained by
    ``python -m msgrpo.tools.tiny_tokenizer`` and saved to ``tokenizer_file`` (another vocabulary size).

    Byte-level BPE never produces an unknown token. The ChatML template and ``<|im_end|>`` as EOS make
    it a drop-in chat tokenizer. ``seed`` is accepted for compatibility and changes nothing: one tokenizer
    for every seed.
    """
    if tokenizer_file is not None:
        return _wrap(Tokenizer.from_file(str(tokenizer_file)))
    if vocab_size != FROZEN_VOCAB_SIZE:
        raise ConfigError(
            f"the tiny preset's frozen tokenizer has {FROZEN_VOCAB_SIZE} tokens; for another size train one with "
            f"`python -m msgrpo.tools.tiny_tokenizer --vocab-size {vocab_size} --out tok.json` and set "
            "tiny.tokenizer_file",
            setting="tiny.vocab_size",
            value=vocab_size,
        )
    path = resources.files("msgrpo") / "assets" / FROZEN_TOKENIZER
    return _wrap(Tokenizer.from_str(path.read_text(encoding="utf-8")))


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
    )


def train_tiny_tokenizer(texts: list[str], vocab_size: int = FROZEN_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (the frozen one: :mod:`msgrpo.tools.tiny_tokenizer`'s
    corpus of the built-in games' text, 512 tokens)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens(TAG_TOKENS)
    return _wrap(tok)


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, settings: TinySettings | None = None
) -> PreTrainedModel:
    """A randomly initialised Llama-shaped LM sized for ``tokenizer``, deterministic from ``seed``."""
    s = settings or TinySettings()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads,
        num_key_value_heads=s.num_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=s.initializer_range,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def build_tiny(seed: int = 0, settings: TinySettings | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The tiny offline preset: ``(model, tokenizer)``; ``seed`` sets the random weights only."""
    s = settings or TinySettings()
    tokenizer = build_tiny_tokenizer(0, s.vocab_size, s.tokenizer_file)  # one for every seed: ids never depend on it
    return build_tiny_model(tokenizer, seed, s), tokenizer
