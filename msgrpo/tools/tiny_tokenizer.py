"""Train the tiny preset's tokenizer on the built-in games' text: ``python -m msgrpo.tools.tiny_tokenizer``.

The frozen tokenizer in ``msgrpo/assets`` is this script's output at the default size (512, seed 0), frozen
so that rewording a game never changes the ids of existing checkpoints. Another size::

    python -m msgrpo.tools.tiny_tokenizer --vocab-size 384 --out tok.json
    python -m msgrpo.recipes.frozen_lake fit --model.policy.init_args.tiny.tokenizer_file=tok.json
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence

from msgrpo.components import games
from msgrpo.lm.models import FROZEN_VOCAB_SIZE, train_tiny_tokenizer


def builtin_games() -> list:
    """One default instance of every built-in game."""
    return [games.FrozenLake(), games.Snake()]


def corpus(seed: int = 0) -> list[str]:
    """Text the tiny tokenizer is trained on: rules, observations and answers of the built-in games."""
    rng = random.Random(seed)
    texts: list[str] = []
    for game in builtin_games():
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


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m msgrpo.tools.tiny_tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=FROZEN_VOCAB_SIZE)
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus's random answers")
    parser.add_argument("--out", required=True, help="tokenizer JSON to write")
    args = parser.parse_args(argv)
    tokenizer = train_tiny_tokenizer(corpus(args.seed), args.vocab_size)
    tokenizer.backend_tokenizer.save(args.out)
    print(f"msgrpo.tools.tiny_tokenizer: {len(tokenizer)} tokens written to {args.out}")
    return args.out


if __name__ == "__main__":
    main()
