"""Redraw a run's curves: ``python -m msgrpo.tools.plot <log dir>`` (:func:`msgrpo.observe.curves.plot_run`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from msgrpo.observe.curves import CURVES_FILE, REFERENCES_FILE, plot_run

__all__ = ["CURVES_FILE", "REFERENCES_FILE", "main", "plot_run"]  # (msgrpo.plot's names, for the old path)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m msgrpo.tools.plot", description="Draw a run's curves.png.")
    parser.add_argument("log_dir", help="a run's log directory (the one holding metrics.csv)")
    parser.add_argument("--out", default=None, help=f"image to write (default: <log_dir>/{CURVES_FILE})")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('error: plotting needs matplotlib: pip install -e ".[plot]"', file=sys.stderr)
        raise SystemExit(2) from None
    try:
        path = plot_run(args.log_dir, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"msgrpo.tools.plot: wrote {path}")
    return path


if __name__ == "__main__":
    main()
