"""The float prior's coding kernels: the compiled module ``_float_kernels.c``, the only
implementation (float fields, integer levels and repeats).

C, not numba: a fresh process imports it in a millisecond (numba cost about a second and
~160 MB before the first value: import, CPU target registries, JIT or cache load), which is what
a one-shot CLI call or a new Dask worker pays, and the integer models run about twice as fast.
The bytes they write are the format: tests/plugins/lmgc_float/test_float_kernels.py holds
digests of blocks of fixed inputs (written by the numba kernels this replaced, and equal) and
tests/fixtures holds committed streams; a kernel change must keep both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from lmgc_core.util.errors import PluginError

from . import tables

KERNEL_VERSION = 4
"""The compiled module's ``KERNEL_VERSION`` this code expects; another one is a stale build."""
REBUILD = "rebuild it with `pip install -e .` (or reinstall lmgc; it needs a C compiler)"


def signed(bits: np.ndarray) -> np.ndarray:
    """The same bits as signed integers of their width (what the kernels take). A view, never a
    copy: a kernel writing into a copy would lose the decoded values, so the caller passes
    contiguous, aligned arrays (:func:`formats.as_uint` makes them)."""
    if not (bits.flags.c_contiguous and bits.flags.aligned):
        raise ValueError("the float kernels take contiguous, aligned arrays")
    return bits.view(np.dtype(f"i{bits.dtype.itemsize}"))


@dataclass(frozen=True)
class FloatKernels:
    """The five calls the float block codec makes."""

    name: str
    encode_segments: Callable
    decode_segments: Callable
    encoder_finish: Callable
    flush_bits: Callable
    decoder_init: Callable


@dataclass(frozen=True)
class IntKernels:
    """The calls the integer block codec makes (level and repeat models); the models are the
    tuples of :func:`tables.level_models` and :func:`tables.repeat_models`."""

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
        "LENGTH_CONTEXTS",
        "TOP_BITS",
        "REPEAT_CONTEXTS",
        "MATCH_CONTEXTS",
        "HASH_BITS",
        "MATCH_MIN",
        "TREE_CONTEXTS",
    ]
    return {n: getattr(tables, n) for n in names}


@functools.cache
def _module() -> ModuleType:
    """The compiled module; a clear :class:`PluginError` when it is missing, stale or disagrees
    with :mod:`tables`."""
    try:
        from . import _float_kernels as c  # type: ignore[attr-defined]
    except ImportError as err:
        raise PluginError(
            f"the float prior's compiled kernels are missing ({err}); {REBUILD}"
        ) from err
    if c.KERNEL_VERSION != KERNEL_VERSION:
        raise PluginError(
            f"lmgc_float._float_kernels is version {c.KERNEL_VERSION}, this code needs "
            f"{KERNEL_VERSION}: {REBUILD}"
        )
    if _expected_constants() != c.CONSTANTS:
        raise PluginError(f"lmgc_float._float_kernels was built with other constants: {REBUILD}")
    return c


@functools.cache
def float_kernels() -> FloatKernels:
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


@functools.cache
def int_kernels() -> IntKernels:
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
