"""One float path on every x86-64 CPU: the switch behind ``--reproducible``.

The same command and seed give different figures on different machines, because the kernels that run
depend on the CPU: ATen picks AVX-512 or AVX2 code for softmax, norms and reductions, MKL picks a GEMM
code path per CPU (and on AMD CPUs supports no pinned branch but its slow "compatible" one), and
reductions split by thread count. :func:`pin_float_path` fixes every one of these before any kernel
runs, so that a run gives the same numbers to the digit on any x86-64 Linux machine with AVX2 and the
pinned wheels (``constraints.txt``):

========================  ==============================================================================
ATen kernels              ``ATEN_CPU_CAPABILITY=avx2`` (AVX2 code, also on AVX-512 CPUs)
MKL GEMM                  ``MKL_CBWR=COMPATIBLE,STRICT`` (conditional numerical reproducibility; the one
                          branch MKL supports on Intel and AMD CPUs alike)
oneDNN                    ``ONEDNN_MAX_CPU_ISA=AVX2``
threads                   2 (intra-op), whatever the machine has
algorithms                ``torch.use_deterministic_algorithms(True)`` (warn-only where none exists)
========================  ==============================================================================

It costs speed (MKL's compatible branch is scalar SSE2 code: measured in ``benchmarks/reproducible.py``).
The settings must be in place before the first kernel: the recipes apply them right after parsing the
command line, before any model is built, and check that they took effect; in a process where kernels
already ran, set the environment variables before starting Python instead.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from msgrpo.errors import ConfigError

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}
"""The environment of the pinned path."""
THREADS = 2
"""Intra-op threads of the pinned path (reduction order depends on it)."""

_MKL_CBWR_COMPATIBLE = 3
_MKL_CBWR_STRICT = 0x10000
_MKL_CBWR_ALL = -1
_MKL_MODE_CHANGE_FAILURE = -8


def _mkl():
    """The MKL inside the torch wheel (``mkl_serv_cbwr_*`` exported by ``libtorch_cpu``), or None."""
    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        mkl = ctypes.CDLL(str(lib))
        get, put = mkl.mkl_serv_cbwr_get, mkl.mkl_serv_cbwr_set
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    put.argtypes, put.restype = [ctypes.c_int], ctypes.c_int
    return get, put


def mkl_cbwr_mode() -> int | None:
    """MKL's conditional-numerical-reproducibility setting (``mkl_cbwr_get(MKL_CBWR_ALL)``): 1 = off,
    2 = automatic, 3 = compatible, plus ``0x10000`` for strict; None when this torch has no MKL."""
    mkl = _mkl()
    return None if mkl is None else mkl[0](_MKL_CBWR_ALL)


def pin_float_path(threads: int = THREADS) -> dict[str, str]:
    """Pin ATen's kernels, MKL's GEMM branch, oneDNN's ISA, the thread count and deterministic algorithms.

    Returns:
        What was pinned (for logs): the environment, the threads and MKL's mode.

    Raises:
        ConfigError: When a setting cannot take effect in this process (a kernel already ran, or the CPU
            has no AVX2), with what to do instead.
    """
    os.environ.update(PINNED_ENV)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise ConfigError(
            f"--reproducible needs ATen's AVX2 kernels, but this process already uses {capability} (a kernel ran "
            "before the switch, or the CPU has no AVX2): start Python with ATEN_CPU_CAPABILITY=avx2 set",
            setting="reproducible",
        )
    mkl = _mkl()
    if mkl is not None:
        get, put = mkl
        wanted = _MKL_CBWR_COMPATIBLE | _MKL_CBWR_STRICT
        if get(_MKL_CBWR_ALL) != wanted:
            code = put(wanted)
            if code != 0:
                reason = "MKL already ran in this process" if code == _MKL_MODE_CHANGE_FAILURE else f"code {code}"
                raise ConfigError(
                    f"--reproducible could not pin MKL's GEMM branch ({reason}): start Python with "
                    "MKL_CBWR=COMPATIBLE,STRICT set",
                    setting="reproducible",
                )
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return {**PINNED_ENV, "threads": str(threads), "mkl_cbwr": str(mkl_cbwr_mode())}
