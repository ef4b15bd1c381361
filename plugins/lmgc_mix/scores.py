"""Expert scores -> integer frequencies over the free symbols: the one place the mixture turns
what an expert says into numbers it can mix.

* *linear* scores (counts; :class:`~lmgc_core.components.interfaces.ContextScores` with
  ``linear=True``):
  an explicit left-to-right sum, one exactly rounded division, a floor. Same numbers on every CPU.
* *log* scores (an LM's logits): softmax with ``np.exp``, whose last bits depend on the CPU's SIMD
  kernels. Only language models return those, and their streams are bound to the machine anyway
  (their fingerprint records the CPU kernels).
"""

from __future__ import annotations

import numpy as np

from lmgc_core.components.interfaces import ContextScores

from .fixed import quantize


def _ordered_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis, column by column: a fixed order whatever numpy's SIMD level."""
    total = x[..., 0].copy()
    for j in range(1, x.shape[-1]):
        total += x[..., j]
    return total[..., None]


def linear_probs(table: np.ndarray) -> np.ndarray:
    w = np.asarray(table, dtype=np.float64)
    w = np.where(w > 0, np.fmin(w, 1e300), 0.0)  # NaN, negatives -> 0
    total = _ordered_sum(w)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / w.shape[-1])


def log_probs(table: np.ndarray) -> np.ndarray:
    s = np.asarray(table, dtype=np.float64)
    s = np.fmin(np.fmax(s, -1e300), 1e300)  # NaN and infinities -> finite
    p = np.exp(s - s.max(axis=-1, keepdims=True))  # machine-bound: LM experts only
    return p / _ordered_sum(p)


def expert_frequencies(scores: object, free: np.ndarray, rows: int) -> np.ndarray:
    """``(rows, F)`` int64 frequencies summing to ``2**16`` per row, each >= 1, from an expert's
    scores (``(B, A)``, ``(1, A)`` or :class:`ContextScores`)."""
    if isinstance(scores, ContextScores):
        table, index, linear = scores.table, scores.rows, scores.linear
    else:
        table, index, linear = scores, None, False
    table = np.asarray(table)[..., free]
    freq = quantize(linear_probs(table) if linear else log_probs(table))
    if index is not None:
        freq = freq[np.asarray(index)]
    return np.broadcast_to(freq, (rows, freq.shape[-1]))
