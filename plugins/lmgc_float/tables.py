"""The float prior's constants and fresh model tables, in numpy.

The compiled kernels (``_float_kernels.c``) repeat the constants and are checked against them
when they load (:mod:`kernels`); the models' state lives in these arrays between kernel calls.
"""

from __future__ import annotations

import threading

import numpy as np

# -- range coder --------------------------------------------------------------------------------
TOTAL_BITS = 15
TOTAL = 1 << TOTAL_BITS
TOP = 1 << 24
PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS
COUNT_STEP = 24
COUNT_LIMIT = 1 << 16
FIRST_REBUILD = 8
MAX_REBUILD = 256

# -- float fields -------------------------------------------------------------------------------
RESID = 15
"""Exponent differences in [-RESID, RESID] are modelled; others escape to raw bits."""
ESCAPE = 2 * RESID + 1
EXP_SYMBOLS = ESCAPE + 1
MANT_BITS = 4
FRAC = 4  # fixed-point fraction bits of the predicted exponent
ZERO_CONTEXTS = 81
SIGN_CONTEXTS = 28  # 27 for non-zero values, one for the sign of zeros
EXP_CONTEXTS = 16
MANT_CONTEXTS = 5
CHECK = 4096
ROOM = 8 * CHECK + 64

# -- integer models -----------------------------------------------------------------------------
LENGTH_CONTEXTS = 65  # the level model's top bits, in the context of the bit length (1..64)
TOP_BITS = 4
REPEAT_CONTEXTS = 3 * 3 * 3 * 2
MATCH_CONTEXTS = 16 * 2
HASH_BITS = 18
MATCH_MIN = 4  # values hashed to find a match
TREE_CONTEXTS = 257 * 256  # first-byte tree: 256 nodes for each left value and row start


def encoder_state() -> np.ndarray:
    """``[low, range, cache, cache_size, out_pos]`` of a fresh range encoder."""
    return np.array([0, 0xFFFFFFFF, 0, 1, 0], dtype=np.int64)


def new_bits(contexts: int) -> np.ndarray:
    """``contexts`` binary models at p = 1/2 (two adaptation rates each)."""
    return np.full((contexts, 2), PROB_ONE // 2, dtype=np.int64)


def new_model(contexts: int, symbols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``contexts`` adaptive models over ``symbols`` symbols: counts, cumulative frequencies
    (``(contexts, symbols + 1)``, summing to ``TOTAL``) and ``[tick, rebuild interval]``.

    All counts start at 1, so the table is the one the kernels' ``rebuild`` makes from them:
    ``1 + avail // symbols`` each, the remainder to the first symbol."""
    counts = np.ones((contexts, symbols), dtype=np.int64)
    step = 1 + (TOTAL - symbols) // symbols
    cum = np.arange(symbols + 1, dtype=np.int64) * step
    cum[1:] += TOTAL - symbols * step
    cum = np.repeat(cum[None, :], contexts, axis=0)
    ticks = np.zeros((contexts, 2), dtype=np.int64)
    ticks[:, 1] = FIRST_REBUILD
    return counts, cum, ticks


def float_models() -> tuple:
    """Fresh zero, sign, exponent and top-mantissa models of one float block."""
    return (
        new_bits(ZERO_CONTEXTS),
        new_bits(SIGN_CONTEXTS),
        new_model(EXP_CONTEXTS, EXP_SYMBOLS),
        new_model(MANT_CONTEXTS, 1 << MANT_BITS),
    )


def level_models() -> tuple:
    """Fresh zero, sign, bit-length and top-bits models of one integer block (levels)."""
    return (
        new_bits(ZERO_CONTEXTS),
        new_bits(SIGN_CONTEXTS),
        new_model(EXP_CONTEXTS, EXP_SYMBOLS),
        new_model(LENGTH_CONTEXTS, 1 << TOP_BITS),
    )


def _fresh_repeat_models(itemsize: int) -> tuple:
    return (
        new_bits(MATCH_CONTEXTS),
        np.full(1 << HASH_BITS, -1, dtype=np.int64),
        new_bits(REPEAT_CONTEXTS),
        new_bits(TREE_CONTEXTS),
        new_model(max(1, (itemsize - 1) * 256), 256),
    )


_REPEAT_MODELS = threading.local()
"""Per thread and item size: a pristine set of :func:`repeat_models` and a working one."""


def repeat_models(itemsize: int) -> tuple:
    """Fresh match, match table, repeat, first-byte tree and further-byte models of one integer
    block (repeats); the 256-symbol models have a context per byte after the first.

    They are 2-10 MB (int16-int64): built anew for each block, they cost 2-4 ms a block however
    few its values, mostly faulting in fresh pages (a forged stream of 300,000 one-value int64
    blocks decoded for ~25 minutes). So each thread keeps one working set per item size and
    copies the pristine one over it (~0.5 ms for int64): valid until this thread's next call,
    which the kernels' calls never outlive."""
    held = getattr(_REPEAT_MODELS, "sets", None)
    if held is None:
        held = _REPEAT_MODELS.sets = {}
    if itemsize not in held:
        pristine = _fresh_repeat_models(itemsize)
        held[itemsize] = (_arrays(pristine), _fresh_repeat_models(itemsize))
    pristine, working = held[itemsize]
    for src, dst in zip(pristine, _arrays(working), strict=True):
        np.copyto(dst, src)
    return working


def _arrays(models: tuple) -> list[np.ndarray]:
    """The arrays of a (nested) tuple of models, in order."""
    return [a for m in models for a in (_arrays(m) if isinstance(m, tuple) else [m])]


def decoder_state() -> np.ndarray:
    """``[code, range, in_pos]`` of a range decoder before its first code bytes are loaded
    (``decoder_init``); the encoder's first byte is always 0, so reading starts at 1."""
    return np.array([0, 0xFFFFFFFF, 1], dtype=np.int64)
