"""Integer log2 / exp2 and integer frequency tables for the mixture.

Everything the mixture computes from its experts' probabilities is integer arithmetic on int64
numpy arrays (exact, the same on every CPU whatever SIMD numpy picks), or exactly rounded IEEE
``+ - * /`` on exactly representable values. The two tables below are themselves built with
integers only (repeated squaring, :func:`math.isqrt`), never with ``np.log``/``np.exp`` or libm,
whose last bits differ between AVX2 and AVX-512 builds and FMA/non-FMA code paths.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

FREQ_BITS = 16
"""Expert and candidate distributions are integer frequencies summing to exactly ``2**16``."""
FREQ_TOTAL = 1 << FREQ_BITS
LOG_FRAC = 16
"""log2 values are fixed point with 16 fractional bits (``1.0`` bit = 65536)."""
ONE = 1 << 30
"""Fixed-point 1.0 of the exp2 table (30 fractional bits)."""


@cache
def log2_table() -> np.ndarray:
    """``T[q] = floor(log2(q) * 2**16)`` for ``q`` in ``1 .. 2**16`` (``T[0]`` is unused, 0).

    Bit-by-bit logarithm: normalize ``q`` to ``y`` in ``[1, 2)`` (30 fractional bits), then each
    squaring of ``y`` yields the next fractional bit. Pure int64, so identical everywhere."""
    q = np.arange(FREQ_TOTAL + 1, dtype=np.int64)
    q[0] = 1
    exponent = np.zeros_like(q)
    for shift in (16, 8, 4, 2, 1):  # exponent = floor(log2 q) (bit length - 1)
        big = (q >> (exponent + shift)) > 0
        exponent += np.where(big, shift, 0)
    y = q << (30 - exponent)  # in [2**30, 2**31): y / 2**30 in [1, 2)
    frac = np.zeros_like(q)
    for _ in range(LOG_FRAC):
        y = (y * y) >> 30
        bit = y >= (2 << 30)
        frac = (frac << 1) | bit
        y = np.where(bit, y >> 1, y)
    out = (exponent << LOG_FRAC) | frac
    out[0] = 0
    out.setflags(write=False)
    return out


@cache
def _exp2_fraction_table() -> np.ndarray:
    """``E[f] = round-ish(2**(-f / 2**16) * 2**30)`` for ``f`` in ``0 .. 2**16 - 1``.

    The constants ``2**(-2**-j)`` come from exact integer square roots (Python big ints), the
    table from products of them: integer arithmetic throughout."""
    consts = []
    c = 1 << 59  # 2**-1 with 60 fractional bits
    for _ in range(LOG_FRAC):
        c = math.isqrt(c << 60)  # sqrt keeps 60 fractional bits: 2**-0.5, 2**-0.25, ...
        consts.append(c >> 30)  # 30 fractional bits
    f = np.arange(1 << LOG_FRAC, dtype=np.int64)
    table = np.full(f.shape, ONE, dtype=np.int64)
    for j, cj in enumerate(consts):  # bit (LOG_FRAC - 1 - j) of f stands for 2**-(j + 1)
        has = ((f >> (LOG_FRAC - 1 - j)) & 1).astype(bool)
        table = np.where(has, (table * cj) >> 30, table)
    table.setflags(write=False)
    return table


def exp2_neg(d: np.ndarray) -> np.ndarray:
    """``2**(-d / 2**16) * 2**30`` (floored, >= 0) for fixed-point ``d >= 0`` (int64)."""
    whole = np.minimum(d >> LOG_FRAC, 62)
    return _exp2_fraction_table()[d & ((1 << LOG_FRAC) - 1)] >> whole


def normalize(weights: np.ndarray) -> np.ndarray:
    """Non-negative integer rows ``(..., A)`` -> frequencies ``>= 1`` summing to ``2**16``.

    ``1 + floor(w * (2**16 - A) / sum(w))`` per symbol, and what the floors leave over goes to
    the first largest symbol. Rows that are all zero become uniform. Inputs must stay below
    ``2**47`` so the products fit int64."""
    w = np.asarray(weights, dtype=np.int64)
    a = w.shape[-1]
    total = w.sum(axis=-1, keepdims=True)
    zero = total == 0
    if zero.any():
        w = np.where(zero, 1, w)
        total = np.where(zero, a, total)
    q = 1 + (w * (FREQ_TOTAL - a)) // total
    rest = FREQ_TOTAL - q.sum(axis=-1)
    top = np.argmax(q, axis=-1)
    np.put_along_axis(
        q, top[..., None], np.take_along_axis(q, top[..., None], -1) + rest[..., None], -1
    )
    return q


def quantize(probs: np.ndarray) -> np.ndarray:
    """Float probabilities ``(..., A)`` (rows summing to about 1) -> integer frequencies.

    Exactly rounded IEEE multiply and floor only, so it is as portable as its input: exact for
    a portable expert's linear scores, machine-bound for an LM's softmax (which is machine-bound
    already)."""
    p = np.asarray(probs, dtype=np.float64)
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    scaled = np.floor(np.minimum(p, 1.0) * float(1 << 40)).astype(np.int64)
    return normalize(scaled)
