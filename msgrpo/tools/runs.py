"""The one multi-seed runner: a grid of runs ``(seed, float path, threads)``, each in its own process.

A float path is what another machine would change about a run's rounding: ATen's kernel family, MKL's
branch, the thread count, the micro-batch split. Some of it (``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``) must be
set before the process starts, so every run of a grid gets a fresh process with its path's environment.
``msgrpo.tools.report`` and ``msgrpo.tools.ablate`` run recipes through :func:`run_each`, and so do the
learning benchmarks (``benchmarks/common.py``)::

    python -m msgrpo.tools.report --recipe snake --seeds 0 1 2 --float-paths native avx2 --out reports/grid

Each run's output goes to ``<out>/<name>.log``; its result is appended to ``<out>/runs.jsonl`` as soon as it
finishes, so a long study keeps every finished run when it is interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

FLOAT_PATHS: dict[str, tuple[dict[str, str], list[str]]] = {
    # name -> (environment set before the run's process starts, extra recipe arguments)
    "native": ({}, []),
    # ATen's AVX2 kernels and MKL's AVX2 branch: on an AVX-512 CPU the path of AVX2-only CPUs; on AMD CPUs MKL
    # supports no pinned branch and takes its automatic CNR mode (itself another path than the native one)
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}, []),
    # the same maths by the framework's own invariant, another summation order: 4x smaller micro-batches
    "budget": ({}, ["--data.token_budget=4096"]),
    # ATen's scalar kernels and MKL's compatible branch: slow (2-3x), for spot checks
    "scalar": ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}, []),
    # the recipes' --reproducible switch (msgrpo.reproducible): the same numbers on every x86-64 CPU
    "reproducible": ({}, ["--reproducible=true"]),
}
"""Float paths a study samples: each changes a run's rounding the way another machine would."""


class Run(NamedTuple):
    """One run of a grid (``threads`` None: the environment's thread count)."""

    seed: int
    path: str
    threads: int | None

    @property
    def name(self) -> str:
        """``<path>-<threads>t-seed_<seed>`` (``<path>-seed_<seed>`` without a thread count): its log and folder."""
        return f"{self.path}-{self.threads}t-seed_{self.seed}" if self.threads else f"{self.path}-seed_{self.seed}"

    def tag(self) -> dict:
        """The run's coordinates as they appear in ``runs.jsonl``."""
        return {"seed": self.seed, "float_path": self.path, "threads": self.threads}


PINNED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR")
"""Variables that choose a float path: no run inherits them from the caller; its path sets them."""


def add_grid_arguments(parser, default_seeds: list[int] | None = None, default_threads: int | None = 2) -> None:
    """``--seeds``, ``--float-paths``, ``--threads`` and ``--parallel`` on an argparse parser (``default_threads``
    None: a path given without ``@`` keeps the environment's thread count)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=default_seeds or [0], help="run seeds")
    parser.add_argument(
        "--float-paths",
        nargs="+",
        default=["native"],
        metavar="PATH[@THREADS]",
        help=f"float paths of the grid, each with an optional thread count (native@1): {', '.join(FLOAT_PATHS)}",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads,
        help="threads of a path given without @THREADS" + ("" if default_threads else " (default: the environment's)"),
    )
    parser.add_argument(
        "--parallel", type=int, default=1, help="runs at once (each in its own process; 2 cores: at most 2)"
    )


def float_path(spec: str, threads: int | None) -> tuple[str, int | None]:
    """``"native@1"`` -> ``("native", 1)``; a path without ``@`` gets ``threads``; ``reproducible`` always
    runs 2 threads (:mod:`msgrpo.reproducible` pins them).

    Raises:
        SystemExit: an unknown path name (with the known ones), a thread count that is not an integer >= 1.
    """
    name, at, count = spec.partition("@")
    if name not in FLOAT_PATHS:
        raise SystemExit(f"error: unknown float path {name!r} (known: {', '.join(FLOAT_PATHS)})")
    if at and not (count.isdigit() and int(count) >= 1):
        raise SystemExit(f"error: {spec!r}: the thread count after @ must be an integer >= 1")
    threads = int(count) if at else threads
    if threads is not None and threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {threads}")
    if name == "reproducible":
        if threads not in (None, 2):
            raise SystemExit(f"error: {spec!r}: the reproducible path pins 2 threads")
        threads = 2
    return name, threads


def grid(args) -> list[Run]:
    """The runs of parsed ``--seeds`` x ``--float-paths`` (paths outer, seeds inner; each run once)."""
    runs = [Run(seed, *float_path(spec, args.threads)) for spec in args.float_paths for seed in args.seeds]
    return list(dict.fromkeys(runs))


def run_each(
    runs: list[Run],
    command: Callable[[Run], list[str]],
    out: str | Path,
    parallel: int = 1,
    result: Callable[[Run, Path], dict] | None = None,
) -> list[dict]:
    """Run ``command(run)`` once per run, each in its own process (``parallel`` at once), with the run's
    float-path environment (:data:`PINNED` never inherited) and thread count (``MSGRPO_THREADS``,
    ``OMP_NUM_THREADS``) set before it starts. ``wall_s`` is the whole process, start-up included.

    Args:
        runs: the grid.
        command: the run's argument vector (``sys.executable`` first); the path's recipe arguments are
            the caller's to add (``FLOAT_PATHS[run.path][1]``).
        out: folder of the logs (``<name>.log``, everything the run printed) and of ``runs.jsonl``.
        parallel: runs at once.
        result: the finished run's result from its log (default: the log's last JSON line; ``{}`` if none).

    Returns:
        One result per run in order, each tagged with ``seed``, ``float_path``, ``threads`` and ``wall_s``
        (``wall_s`` of the run's own JSON is kept when it has one); a failed run gets ``error`` and
        ``met_target: false``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = result or last_json_line

    def one(run: Run) -> dict:
        log = out / f"{run.name}.log"
        threads = {"MSGRPO_THREADS": str(run.threads), "OMP_NUM_THREADS": str(run.threads)} if run.threads else {}
        inherited = {k: v for k, v in os.environ.items() if k not in PINNED}
        env = {**inherited, **FLOAT_PATHS[run.path][0], **threads}
        start = time.perf_counter()
        with open(log, "w") as handle:
            proc = subprocess.run(command(run), stdout=handle, stderr=subprocess.STDOUT, text=True, env=env)
        wall = round(time.perf_counter() - start, 1)
        found = result(run, log) if proc.returncode == 0 else {}
        if not found:
            found = {"error": f"exit {proc.returncode}, see {log}", "met_target": False}
        record = {"wall_s": wall, **found, **run.tag()}
        with open(out / "runs.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{run.name}: {wall:.0f} s" + (f", met target: {record['met_target']}" if "met_target" in record
                                               else ""), file=sys.stderr, flush=True)  # fmt: skip
        return record

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, runs))


def last_json_line(run: Run, log: Path) -> dict:
    """The last line of ``log`` that parses as a JSON object (``{}`` if none)."""
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(found, dict):
                return found
    return {}


def wilson_interval(passed: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a pass rate ``passed / n`` (sensible at 0 and at n)."""
    if n == 0:
        return 0.0, 1.0
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
