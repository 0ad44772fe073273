"""The README's "Bring your own game" example (``examples/blackjack.py``) trains through the stock recipe CLI."""

from pathlib import Path

import pytest
from fast_fit import FAST_FIT, run_dir
from gymnasium.utils.env_checker import check_env

from msgrpo.recipes import frozen_lake

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_blackjack_game_renders_and_trains(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from blackjack import Blackjack

    game = Blackjack()
    env = game.make_env()
    check_env(env.unwrapped, skip_render_check=True)  # (its rgb render needs pygame; the ansi one is tested)
    game.reset(env, 3)
    assert game.render(env).startswith("Your cards: ") and "The dealer shows: " in game.render(env)
    cli = frozen_lake.main(
        [
            "fit", *FAST_FIT, *run_dir(tmp_path), "--trainer.max_epochs=2",
            "--data.game=blackjack.Blackjack",
            "--model.policy.init_args.max_new_tokens=4",
            "--trainer.limit_val_batches=2", "--trainer.check_val_every_n_epoch=2",
        ]
    )  # fmt: skip
    assert len(cli.model.history) == 2 and set(cli.model.eval_results) == {"train", "natural"}
    episodes = cli.datamodule.last_episodes
    assert episodes and all(1 <= e.length <= 11 for e in episodes)  # a hand takes a few cards at most
    assert all(s.observation.startswith("Your cards: ") for e in episodes for s in e.steps)
    assert {round(s.reward + (0 if s.valid else 0.1), 6) for e in episodes for s in e.steps} <= {-1.0, 0.0, 1.0}
