"""Watch a trained (or zero-shot) policy play: frame by frame in the terminal, or as an animated GIF.

Usage::

    python -m msgrpo.tools.replay --ckpt_path runs/snake/checkpoints/last.ckpt --scenario default-8
    python -m msgrpo.tools.replay --ckpt_path CKPT --config runs/snake/version_0/config.yaml --gif snake.gif
    python -m msgrpo.tools.replay --recipe frozen_lake --scenario nonslip-4x4 --episodes 3    # the untrained policy

Every frame shows the board as text (the observation the agent saw), the model's completion, the action
it names and the reward. ``--gif`` draws the boards with the game's :meth:`~msgrpo.game.TextGame.frame`
(Snake and Frozen Lake draw their grids; any other game gets its text drawn) into an animation: Pillow
comes with the ``plot`` extra. Arguments this module does not know go to the recipe's CLI (overlays,
``--model.policy.init_args...``), as for ``python -m msgrpo.tools.export``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from msgrpo.errors import ConfigError, require
from msgrpo.evaluation import Scenario
from msgrpo.tools.export import build_run, load_checkpoint
from msgrpo.types import Episode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m msgrpo.tools.replay", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt_path", default=None, help="checkpoint to load (default: the untrained policy)")
    parser.add_argument("--config", action="append", default=[], help="the run's config.yaml or overlays")
    parser.add_argument("--recipe", default=None, help="recipe whose packaged config to start from (snake, ...)")
    parser.add_argument("--scenario", default=None, help="scenario of the game's panel (default: the first)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to play (the scenario's first seeds)")
    parser.add_argument("--sampled", action="store_true", help="sample at the policy temperature (default: greedy)")
    parser.add_argument("--delay", type=float, default=None, help="seconds between frames (default 0.4 on a tty)")
    parser.add_argument("--gif", default=None, help="also write an animated GIF of the boards here")
    return parser


def play_recorded(module: Any, scenario: Scenario, episodes: int, greedy: bool, draw: bool):
    """Play the scenario's first ``episodes`` seeds; returns the episodes, the text of every state each
    passed through and (``draw``) its pictures."""
    from msgrpo.rollout import play

    game = scenario.game
    texts: dict[int, list[str]] = {}
    pictures: dict[int, list[Any]] = {}

    def observe(index: int, episode: Episode, env: Any) -> None:
        texts.setdefault(index, []).append(game.render(env))
        if draw:
            pictures.setdefault(index, []).append(game.frame(env))

    generator = torch.Generator(device=module.policy.device).manual_seed(0)
    played = play(
        module.policy, game, scenario.seeds[:episodes], 1, generator=generator, greedy=greedy, observe=observe
    )
    return played, texts, pictures


def frames_text(episode: Episode, states: Sequence[str], action_names: Sequence[str]) -> list[str]:
    """One text frame per state: the board, then what the agent answered and what happened."""
    out = []
    for t, board in enumerate(states):
        lines = [f"--- seed {episode.seed}, step {t} ---", board]
        if t < len(episode.steps):
            step = episode.steps[t]
            valid = "" if step.valid else " (named no action: fallback)"
            lines.append(
                f"> completion: {step.text!r}  action: {action_names[step.action]}{valid}  reward: {step.reward:g}"
            )
        else:
            end = "error: " + episode.error if episode.error else "terminated" if episode.terminated else "step limit"
            lines.append(f"> end ({end}): return {episode.total_reward:g}, success {bool(episode.success)}")
        out.append("\n".join(lines))
    return out


def main(argv: Sequence[str] | None = None) -> list[Episode]:
    args, rest = _parser().parse_known_args(argv)
    if not args.config and not args.recipe:
        args.recipe = "snake"
    try:
        cli = build_run([*(f"--config={c}" for c in args.config), *rest], args.recipe)
        module, data = cli.model, cli.datamodule
        if args.ckpt_path:
            load_checkpoint(module, args.ckpt_path)
        names = [s.name for s in data.panel]
        if args.scenario is not None and args.scenario not in names:
            raise ConfigError(f"--scenario {args.scenario!r} is not in the panel; choose from {names}")
        require(args.episodes >= 1, "--episodes", ">= 1", args.episodes)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    scenario = next(s for s in data.panel if args.scenario in (None, s.name))
    module.eval()
    played, texts, pictures = play_recorded(module, scenario, args.episodes, not args.sampled, args.gif is not None)
    delay = args.delay if args.delay is not None else (0.4 if sys.stdout.isatty() else 0.0)
    actions = scenario.game.action_names
    for i, episode in enumerate(played):
        for frame in frames_text(episode, texts.get(i, []), actions):
            print(frame, flush=True)
            time.sleep(delay)
    if args.gif:
        from msgrpo.observe.frames import annotate, save_gif

        images = []
        for i, episode in enumerate(played):
            for t, picture in enumerate(pictures.get(i, [])):
                step = episode.steps[t] if t < len(episode.steps) else None
                caption = (
                    f"{actions[step.action]}  reward {step.reward:g}" if step else f"return {episode.total_reward:g}"
                )
                images.append(annotate(picture, caption))
        path = save_gif(images, args.gif)
        print(f"msgrpo.tools.replay: {len(images)} frames written to {path}", flush=True)
    return played


if __name__ == "__main__":
    main()
