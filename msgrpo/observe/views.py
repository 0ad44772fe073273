"""What a run shows beyond its metrics: episode transcripts (JSON lines) and, in TensorBoard, the
transcripts as text and the boards as pictures. Called by the training module at every evaluation and,
with ``data.log_episodes``, every training iteration; rank 0 writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msgrpo.game import TextGame
from msgrpo.observe import transcripts
from msgrpo.types import Episode


def _tensorboard(trainer: Any) -> Any:
    """The TensorBoard ``SummaryWriter`` of the trainer's loggers, or None."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def markdown(record: dict[str, Any]) -> str:
    """A transcript record as markdown (TensorBoard's text panel)."""
    head = (
        f"**{record.get('scenario', record.get('split'))}**, seed {record['seed']}: return {record['return']}, "
        f"{'success' if record['success'] else 'no success'} ({record['outcome']}, {record['length']} steps)"
    )
    steps = [
        f"{n}. `{s['completion']!s}` -> **{s['action']}**{'' if s['valid'] else ' (invalid)'}, reward {s['reward']}"
        for n, s in enumerate(record["steps"], 1)
    ]
    first = record["steps"][0]["observation"] if record["steps"] else ""
    return "\n\n".join([head, "First observation:\n\n    " + first.replace("\n", "\n    "), *steps])


def wants_frames(trainer: Any) -> bool:
    """Whether board pictures are wanted (a TensorBoard logger and Pillow)."""
    if trainer is None or _tensorboard(trainer) is None:
        return False
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return True


def first_episode_frames(game: TextGame, frames: list[Any]):
    """An ``observe`` hook (:func:`msgrpo.rollout.play`) that draws the first episode's states into ``frames``."""

    def observe(index: int, episode: Episode, env: Any) -> None:
        if index == 0:
            frames.append(game.frame(env))

    return observe


def strip(frames: Sequence[Any], limit: int = 12) -> Any:
    """Up to ``limit`` frames side by side, as a ``[3, H, W]`` uint8 array for ``add_image``."""
    import numpy as np
    from PIL import Image

    frames = list(frames)[:limit]
    height = max(f.height for f in frames)
    canvas = Image.new("RGB", (sum(f.width + 4 for f in frames), height), "white")
    x = 0
    for frame in frames:
        canvas.paste(frame, (x, 0))
        x += frame.width + 4
    return np.asarray(canvas).transpose(2, 0, 1).copy()


def show_episodes(
    trainer: Any,
    split: str,
    game: TextGame,
    episodes: Sequence[Episode],
    iteration: int,
    scenario: str | None = None,
    frames: Sequence[Any] | None = None,
) -> Path | None:
    """Write transcripts of ``episodes`` under the run's log dir (and to TensorBoard, with ``frames`` of
    the first). Returns the transcript file (None without a log dir or episodes)."""
    log_dir = getattr(trainer, "log_dir", None) or getattr(trainer, "default_root_dir", None)
    if not episodes or log_dir is None or trainer.global_rank != 0:
        return None
    context = {"split": split, "iteration": iteration, **({"scenario": scenario} if scenario else {})}
    records = [transcripts.episode_record(e, game.action_names, **context) for e in episodes]
    path = transcripts.write(log_dir, split, records)
    writer = _tensorboard(trainer)
    if writer is not None:
        tag = f"{split}/{scenario}" if scenario else split
        writer.add_text(f"transcripts/{tag}", markdown(records[0]), global_step=iteration)
        if frames:
            writer.add_image(f"boards/{tag}", strip(frames), global_step=iteration)
    return path
