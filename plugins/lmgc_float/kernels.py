"""Which kernels run (float model and integer models): the compiled ones when they are built,
else numba's.

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

import numpy as np

from . import tables

KERNEL_VERSION = 3
"""The compiled module's ``KERNEL_VERSION`` this code expects; another one is a stale build."""
ENV = "LMGC_FLOAT_KERNELS"


def signed(bits: np.ndarray) -> np.ndarray:
    """The same bits as signed integers of their width (what the kernels take). A view, never a
    copy: a kernel writing into a copy would lose the decoded values, so the caller passes
    contiguous, aligned arrays (:func:`formats.as_uint` makes them)."""
    if not (bits.flags.c_contiguous and bits.flags.aligned):
        raise ValueError("the float kernels take contiguous, aligned arrays")
    return bits.view(np.dtype(f"i{bits.dtype.itemsize}"))


@dataclass(frozen=True)
class FloatKernels:
    """The five calls the float block codec makes, from one implementation."""

    name: str
    encode_segments: Callable
    decode_segments: Callable
    encoder_finish: Callable
    flush_bits: Callable
    decoder_init: Callable


@dataclass(frozen=True)
class IntKernels:
    """The calls the integer block codec makes (level and repeat models), from one
    implementation; the models are the tuples of :func:`tables.level_models` and
    :func:`tables.repeat_models`."""

    name: str
    encode_levels: Callable
    decode_levels: Callable
    encode_ints: Callable
    decode_ints: Callable
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


def _module():
    """The compiled module; ImportError when it is missing, stale or disagrees with
    :mod:`tables`."""
    from . import _float_kernels as c  # type: ignore[attr-defined]

    if c.KERNEL_VERSION != KERNEL_VERSION:
        raise ImportError(
            f"lmgc_float._float_kernels is version {c.KERNEL_VERSION}, this code needs "
            f"{KERNEL_VERSION}: rebuild it with `pip install -e .` (or reinstall lmgc)"
        )
    if _expected_constants() != c.CONSTANTS:
        raise ImportError("lmgc_float._float_kernels was built with other model constants")
    return c


def compiled() -> FloatKernels:
    """The compiled float kernels (ImportError as :func:`_module`)."""
    c = _module()

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


def compiled_int() -> IntKernels:
    """The compiled integer kernels (ImportError as :func:`_module`)."""
    c = _module()

    def encode_levels(vals, segs, width, centre, es, out, bw, raw, zp, sp, lm, tm):
        return c.encode_levels(vals, segs, width, centre, es, out, bw, raw, zp, sp, *lm, *tm)

    def decode_levels(out, segs, width, centre, ds, inp, br, raw, zp, sp, lm, tm):
        c.decode_levels(out, segs, width, centre, ds, inp, br, raw, zp, sp, *lm, *tm)

    def encode_ints(vals, segs, itemsize, es, out, matches, table, repeat, tree, model):
        return c.encode_ints(vals, segs, itemsize, es, out, matches, table, repeat, tree, *model)

    def decode_ints(out, segs, itemsize, ds, inp, matches, table, repeat, tree, model):
        c.decode_ints(out, segs, itemsize, ds, inp, matches, table, repeat, tree, *model)

    return IntKernels(
        "c", encode_levels, decode_levels, encode_ints, decode_ints, c.encoder_finish,
        c.flush_bits, c.decoder_init,
    )  # fmt: skip


def numba_int_kernels() -> IntKernels:
    from . import int_kernel as ik
    from . import level_kernel as lk
    from . import rangecoder as rc

    return IntKernels(
        "numba", lk.encode_levels, lk.decode_levels, ik.encode_ints, ik.decode_ints,
        rc.encoder_finish, rc.flush_bits, rc.decoder_init,
    )  # fmt: skip


def _choose(build_compiled: Callable, build_numba: Callable):
    choice = os.environ.get(ENV, "").strip().lower()
    if choice == "numba":
        return build_numba()
    if choice == "c":
        return build_compiled()
    if choice:
        raise ValueError(f"{ENV}={choice!r}: use 'c' or 'numba'")
    try:
        return build_compiled()
    except ImportError as err:
        warnings.warn(
            f"float prior: compiled kernels unavailable ({err}); using numba's (same bytes, "
            "about 1 s more start-up per process)",
            RuntimeWarning,
            stacklevel=3,
        )
        return build_numba()


@functools.cache
def float_kernels() -> FloatKernels:
    return _choose(compiled, numba_kernels)


@functools.cache
def int_kernels() -> IntKernels:
    return _choose(compiled_int, numba_int_kernels)
