"""GymnasiumGame: any registered env with a discrete action space and an ansi render, with no code."""

import pytest
from fast_fit import FAST_FIT, run_dir
from gymnasium.utils.env_checker import check_env

from msgrpo.components.games import GymnasiumGame
from msgrpo.components.games.gymnasium_game import strip_ansi
from msgrpo.errors import ConfigError
from msgrpo.recipes import frozen_lake


def test_escape_codes_are_stripped():
    # coloured spans carry state (Taxi's taxi is a highlighted blank): they stay between marks
    assert strip_ansi("|\x1b[43m \x1b[0m| : |\x1b[34;1mB\x1b[0m|\n\n") == "|* *| : |*B*|"
    assert strip_ansi("\x1b[2J\x1b[Hplain") == "plain"


def test_taxi_renders_as_plain_text_and_seeds_pass_through():
    game = GymnasiumGame("Taxi-v4", ["south", "north", "east", "west", "pickup", "dropoff"], max_steps=20)
    env = game.make_env()
    check_env(env.unwrapped, skip_render_check=True)  # (its rgb render needs pygame; the ansi one is tested)
    game.reset(env, 7)
    first = game.render(env)
    assert "\x1b" not in first and first.startswith("Current state:\n+---------+")
    game.reset(env, 7)
    assert game.render(env) == first  # the same seed, the same start
    starts = set()
    for seed in range(8):
        game.reset(env, seed)
        starts.add(game.render(env))
    assert len(starts) > 1  # the seed reaches the env
    assert "Actions: south, north, east, west, pickup, dropoff. You have at most 20 moves." in game.rules()
    assert first.count("*") >= 4  # the taxi and the passenger's pick-up spot are marked
    result = game.act(env, "<action>north</action>")
    assert result.valid and result.action == 1


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="action_names has 2 names but CliffWalking-v1's action space"):
        GymnasiumGame("CliffWalking-v1", ["up", "down"])
    with pytest.raises(ConfigError, match="env_id 'NoSuchEnv-v0' cannot be made"):
        GymnasiumGame("NoSuchEnv-v0", ["a"])


@pytest.mark.slow
def test_cliff_walking_trains_through_the_stock_recipe_with_no_code(tmp_path):
    cli = frozen_lake.main(
        [
            "fit", *FAST_FIT, *run_dir(tmp_path), "--trainer.max_epochs=2",
            "--data.game=GymnasiumGame",
            "--data.game.init_args.env_id=CliffWalking-v1",
            "--data.game.init_args.action_names=[up,right,down,left]",
            "--data.game.init_args.max_steps=6",
            "--model.policy.init_args.allowed_tokens=[up,right,down,left]",
            "--trainer.limit_val_batches=1", "--trainer.check_val_every_n_epoch=2",
        ]
    )  # fmt: skip
    assert len(cli.model.history) == 2
    assert set(cli.model.eval_results) == {"train"}
    steps = [s for e in cli.datamodule.last_episodes for s in e.steps]
    assert steps and all(s.valid for s in steps) and all("Current state:" in s.observation for s in steps)
    # every step -1, or -100 into the cliff (which sends the player back to the start: no termination)
    assert all(s.reward in (-1.0, -100.0) for s in steps)
    assert all(e.length == 6 and e.truncated for e in cli.datamodule.last_episodes)  # the goal is 13 moves away
