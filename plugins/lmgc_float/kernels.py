"""Which float kernels run: the compiled ones when they are built, else numba's.

Both produce the same bytes. The compiled module (``_float_kernels.c``, built by ``pip install``)
spares a fresh process numba's start-up (about a second: import, CPU target registries, cache
load), which is what a one-shot CLI call or a new Dask worker pays before coding anything. The
numba kernels stay as the reference and the fallback where no compiler was available.

``LMGC_FLOAT_KERNELS=numba`` (or ``=c``, which fails loudly when the module is missing) picks one.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from . import tables

KERNEL_VERSION = 2
"""The compiled module's ``KERNEL_VERSION`` this code expects; another one is a stale build."""
ENV = "LMGC_FLOAT_KERNELS"


@dataclass(frozen=True)
class FloatKernels:
    """The five calls the float block codec makes, from one implementation."""

    name: str
    encode_segments: Callable
    decode_segments: Callable
    encoder_finish: Callable
    flush_bits: Callable
    decoder_init: Callable


def _expected_constants() -> dict[str, int]:
    names = [
        "TOTAL_BITS",
        "TOP",
        "PROB_ONE",
        "COUNT_STEP",
        "MAX_REBUILD",
        "COUNT_LIMIT",
        "RESID",
        "MANT_BITS",
        "FRAC",
        "ZERO_CONTEXTS",
        "SIGN_CONTEXTS",
        "EXP_CONTEXTS",
        "MANT_CONTEXTS",
        "CHECK",
        "EXP_SYMBOLS",
    ]
    return {n: getattr(tables, n) for n in names}


def compiled() -> FloatKernels:
    """The compiled kernels; ImportError when they are missing, stale or disagree with
    :mod:`tables`."""
    from . import _float_kernels as c  # type: ignore[attr-defined]

    if c.KERNEL_VERSION != KERNEL_VERSION:
        raise ImportError(
            f"lmgc_float._float_kernels is version {c.KERNEL_VERSION}, this code needs "
            f"{KERNEL_VERSION}: rebuild it with `pip install -e .` (or reinstall lmgc)"
        )
    if _expected_constants() != c.CONSTANTS:
        raise ImportError("lmgc_float._float_kernels was built with other model constants")

    def encode_segments(vals, segs, width, ebits, mbits, es, rc_out, bw, raw_out, zp, sp, em, mm):
        return c.encode_segments(
            vals, segs, width, ebits, mbits, es, rc_out, bw, raw_out, zp, sp, *em, *mm
        )

    def decode_segments(out, segs, width, ebits, mbits, ds, rc_in, br, raw_in, zp, sp, em, mm):
        c.decode_segments(out, segs, width, ebits, mbits, ds, rc_in, br, raw_in, zp, sp, *em, *mm)

    return FloatKernels(
        "c", encode_segments, decode_segments, c.encoder_finish, c.flush_bits, c.decoder_init
    )


def numba_kernels() -> FloatKernels:
    from . import float_kernel as fk
    from . import rangecoder as rc

    return FloatKernels(
        "numba", fk.encode_segments, fk.decode_segments, rc.encoder_finish, rc.flush_bits,
        rc.decoder_init,
    )  # fmt: skip


@functools.cache
def float_kernels() -> FloatKernels:
    choice = os.environ.get(ENV, "").strip().lower()
    if choice == "numba":
        return numba_kernels()
    if choice == "c":
        return compiled()
    if choice:
        raise ValueError(f"{ENV}={choice!r}: use 'c' or 'numba'")
    try:
        return compiled()
    except ImportError as err:
        warnings.warn(
            f"float prior: compiled kernels unavailable ({err}); using numba's (same bytes, "
            "about 1 s more start-up per process)",
            RuntimeWarning,
            stacklevel=2,
        )
        return numba_kernels()
