"""Built-in model presets that need no network.

* ``"tiny"``: a Llama-shaped causal LM (hidden 64, 2 layers) with random weights, and a byte-level BPE
  tokenizer trained in-process on the built-in games' own text, with a ChatML chat template. Everything
  is deterministic from a seed, so a checkpoint's weights always meet the same tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

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
(checkpoints also record the tokenizer's :func:`~msgrpo.loading.tokenizer_fingerprint`)."""
FROZEN_VOCAB_SIZE = 512


@dataclass
class TinySettings:
    """Shape of the tiny offline preset.

    Attributes:
        vocab_size: BPE vocabulary size (bytes + merges + special tokens).
        hidden_size: Model width.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        intermediate_size: MLP width.
        initializer_range: Standard deviation of the random initial weights. Larger than the usual 0.02:
            with 0.02 the model needed about 1.5x to 2x more updates to learn to read the few prompt
            tokens that describe the state (``benchmarks/README.md``, Frozen Lake).
    """

    vocab_size: int = FROZEN_VOCAB_SIZE
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    initializer_range: float = 0.05


def _builtin_games() -> list:
    """One default instance of every built-in game (local import: games do not depend on models)."""
    from msgrpo.components import games

    return [games.FrozenLake()] + ([games.Snake()] if hasattr(games, "Snake") else [])


def _corpus(seed: int) -> list[str]:
    """Text the tiny tokenizer is trained on: rules, observations and answers of the built-in games."""
    rng = random.Random(seed)
    texts: list[str] = []
    for game in _builtin_games():
        env = game.make_env()
        texts.append(game.rules())
        for episode in range(8):
            game.reset(env, seed * 1000 + episode)
            for _ in range(4):
                texts.extend(m["content"] for m in game.messages(env))
                name = rng.choice(game.action_names)
                texts.append(f"<think>I move {name}.</think><action>{name}</action>")
                result = game.act(env, f"<action>{name}</action>")
                if result.terminated or result.truncated:
                    break
        texts.extend(name for name in game.action_names for _ in range(32))  # bare names: one token each
    return texts


def build_tiny_tokenizer(seed: int = 0, vocab_size: int = FROZEN_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The tiny preset's byte-level BPE tokenizer: the frozen one for the default vocabulary size, else
    trained in-process (about 50 ms, deterministic from ``seed``) on the built-in games' current text.

    Byte-level BPE never produces an unknown token. The ChatML template and ``<|im_end|>`` as EOS make
    it a drop-in chat tokenizer.
    """
    if vocab_size == FROZEN_VOCAB_SIZE:
        path = resources.files("msgrpo") / "assets" / FROZEN_TOKENIZER
        return _wrap(Tokenizer.from_str(path.read_text(encoding="utf-8")))
    return train_tiny_tokenizer(seed, vocab_size)


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
    )


def train_tiny_tokenizer(seed: int = 0, vocab_size: int = FROZEN_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in games' text (how the frozen one was made)."""
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
    tok.train_from_iterator(_corpus(seed), trainer)
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
    tokenizer = build_tiny_tokenizer(0, s.vocab_size)  # one tokenizer for every seed: ids never depend on it
    return build_tiny_model(tokenizer, seed, s), tokenizer
