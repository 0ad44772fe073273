"""Pictures of game states (Pillow, from the ``plot`` extra): board grids, a text fallback, animated GIFs.

A game draws its boards by overriding :meth:`msgrpo.game.TextGame.frame` with :func:`grid_image`; every
other game gets :func:`text_image` of its text observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msgrpo.errors import ConfigError

CELL = 24
"""Side of one board cell, in pixels."""


def _pil() -> Any:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as err:  # pragma: no cover - Pillow comes with matplotlib
        raise ConfigError('pictures need Pillow: pip install -e ".[plot]"') from err
    return Image, ImageDraw, ImageFont


def grid_image(cells: Sequence[Sequence[str]], colours: dict[str, str], caption: str = "") -> Any:
    """A board: ``cells[r][c]`` (top row first) is a key of ``colours`` (a fill colour) or any text.

    Cells whose key is not a colour are drawn white with their text in the middle; ``caption`` goes under
    the board. Returns an RGB ``PIL.Image``.
    """
    Image, ImageDraw, ImageFont = _pil()
    rows, cols = len(cells), max(len(r) for r in cells)
    caption_h = 16 if caption else 0
    image = Image.new("RGB", (cols * CELL + 1, rows * CELL + 1 + caption_h), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for r, row in enumerate(cells):
        for c, key in enumerate(row):
            box = (c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)
            draw.rectangle(box, fill=colours.get(key, "white"), outline="#999999")
            if key not in colours and key.strip():
                draw.text((box[0] + CELL // 2, box[1] + CELL // 2), key, fill="black", font=font, anchor="mm")
    if caption:
        draw.text((2, rows * CELL + 2), caption, fill="black", font=font)
    return image


def text_image(text: str, width: int = 72) -> Any:
    """``text`` drawn in a monospaced block (the fallback frame of a game that draws no board)."""
    Image, ImageDraw, ImageFont = _pil()
    font = ImageFont.load_default()
    lines = [
        line[i : i + width] or " " for line in text.splitlines() or [""] for i in range(0, max(len(line), 1), width)
    ]
    image = Image.new("RGB", (7 * width + 8, 14 * len(lines) + 8), "white")
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((4, 4 + 14 * n), line, fill="black", font=font)
    return image


def annotate(image: Any, text: str) -> Any:
    """``image`` with a line of ``text`` under it."""
    Image, ImageDraw, ImageFont = _pil()
    out = Image.new("RGB", (max(image.width, 7 * len(text) + 8), image.height + 16), "white")
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((2, image.height + 2), text, fill="black", font=ImageFont.load_default())
    return out


def save_gif(frames: Sequence[Any], path: str | Path, seconds_per_frame: float = 0.6) -> Path:
    """Write ``frames`` (PIL images, padded to one size) as a looping animated GIF."""
    Image, _, _ = _pil()
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    width = max(f.width for f in frames)
    height = max(f.height for f in frames)
    padded = []
    for frame in frames:
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(frame, (0, 0))
        padded.append(canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    padded[0].save(
        path, save_all=True, append_images=padded[1:], duration=int(seconds_per_frame * 1000), loop=0, optimize=True
    )
    return path
