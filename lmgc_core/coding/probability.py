"""Scores -> coding distributions, in exactly one place.

Encoder, decoder and ``estimate`` all call :func:`distributions`, so the float64 numbers that
reach the entropy coder are computed by the same code from the same scores on both sides.
"""

from __future__ import annotations

import numpy as np

FLOOR = 2.0**-20
"""Every symbol that can occur keeps at least about this probability: a surprise costs <= ~20 bits
instead of making the stream undecodable."""


def distributions(scores: np.ndarray, free_symbols: np.ndarray, linear: bool = False) -> np.ndarray:
    """Softmax of ``scores[..., free_symbols]`` in float64, mixed with a uniform floor.

    ``scores`` are log-probabilities up to a per-row constant (LM logits, log counts), or, with
    ``linear``, non-negative weights (counts) that are normalised by division only. Returns rows
    that sum to 1 (to float64 rounding) over the free symbols, in their order.

    The linear path uses only operations IEEE 754 rounds exactly (+, *, /, comparisons) on
    values whose sums are exact, so its result is the same on every CPU; ``np.exp`` is not (its
    SIMD variants differ in the last bit between AVX2 and AVX-512), which is why the log path is
    only for priors that are bound to one machine anyway (language models).
    """
    if linear:
        w = np.asarray(scores, dtype=np.float64)[..., free_symbols]
        w = np.where(w > 0, np.fmin(w, 1e300), 0.0)  # NaN, negatives -> 0; inf -> finite
        total = w.sum(axis=-1, keepdims=True)
        k = w.shape[-1]
        p = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / k)
        return p * (1.0 - k * FLOOR) + FLOOR
    s = np.asarray(scores, dtype=np.float64)[..., free_symbols]
    s = np.fmin(np.fmax(s, -1e300), 1e300)  # NaN and infinities -> finite (fmax drops NaN)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    k = p.shape[-1]
    return p * (1.0 - k * FLOOR) + FLOOR


def ideal_bits(probs: np.ndarray, symbols: np.ndarray) -> float:
    """Shannon code length, sum of -log2 p(symbol), of ``symbols`` (indices into the rows)."""
    probs = np.broadcast_to(probs, (len(symbols), probs.shape[-1]))
    return float(-np.log2(probs[np.arange(len(symbols)), symbols]).sum())
