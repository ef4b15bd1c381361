"""The mixing rule at one digit position: a switching Bayes mixture over the experts and their
geometric (logistic) mixture, in integer arithmetic.

Candidates are the ``n`` experts, optionally the uniform distribution (so the mixture never
costs more than storing the digits raw, plus the bound below), and, when ``n >= 2``, the experts'
geometric mixture
``G(x) ∝ prod_i q_i(x) ** v_i`` whose weights ``v`` are learned by online gradient descent on the
code length (the "logistic mixing" of PAQ/cmix, for a 16-symbol alphabet). ``G`` is what gains:
it re-tempers an over-confident language model (``v_lm < 1``) and combines what each expert
knows. It has no worst-case guarantee, so it is only a candidate: every row (window) mixes the
candidates with Bayes weights ``W_k ∝ W_k * q_k(x)`` and a small fixed share ``alpha`` (weights
recover when another candidate becomes better). For every window and digit position this codes
within

    min_k  L_k  +  log2(K)  +  n * log2(1 / (1 - alpha))   bits

of the best candidate ``k`` (Herbster & Warmuth's fixed share; ``n`` symbols at that position,
``K`` candidates), so never more than a few bits per window worse than the best expert, and as
good as the geometric mixture where that wins.

All of it is int64 numpy arithmetic on frequencies that sum to ``2**16``: exact, and the same
on every CPU. ``v`` is shared by the batch's windows (integer sums do not depend on order), the
Bayes weights ``W`` are per window, so the bound holds for each window on its own.
"""

from __future__ import annotations

import numpy as np

from .fixed import FREQ_BITS, LOG_FRAC, exp2_neg, log2_table, normalize

WEIGHT_BITS = 30
"""Bayes weights of a row sum to about ``2**30``."""
SHARE_BITS = 20
V_ONE = 1 << 16
"""Geometric weight 1.0."""
V_MIN, V_MAX = -2 * V_ONE, 8 * V_ONE


class PositionMixer:
    """Mixes ``n`` expert distributions at one digit position for ``rows`` windows."""

    def __init__(
        self,
        n: int,
        rows: int,
        share: int,
        lr: int,
        geometric: bool = True,
        uniform: bool = True,
    ) -> None:
        """``share``: fixed-share rate in units of ``2**-20``; ``lr``: geometric learning rate
        in units of ``2**-16`` (weight change per bit of regret, averaged over the rows)."""
        self.n = n
        self.geometric = geometric and n >= 2
        self.uniform = uniform
        self.k = n + int(self.geometric) + int(uniform)
        self.share = share
        self.lr = lr
        self.weights = np.full((rows, self.k), (1 << WEIGHT_BITS) // self.k, dtype=np.int64)
        self.v = np.full(n, V_ONE // n, dtype=np.int64)
        self._cand: np.ndarray | None = None
        self._logs: np.ndarray | None = None

    def predict(self, experts: np.ndarray) -> np.ndarray:
        """``experts``: ``(n, B, F)`` frequencies (each row sums to ``2**16``). Returns the
        mixture's ``(B, F)`` integer weights (positive, below ``2**50``)."""
        extra = []
        if self.geometric:
            logs = log2_table()[experts]  # (n, B, F), log2 q * 2**16
            s = self.v[0] * logs[0]
            for i in range(1, self.n):
                s = s + self.v[i] * logs[i]
            s >>= LOG_FRAC
            g = normalize(exp2_neg(s.max(axis=-1, keepdims=True) - s))
            extra.append(g)
            self._logs = logs
        if self.uniform:
            extra.append(normalize(np.ones((1, experts.shape[-1]), dtype=np.int64)))
        cand = experts
        if extra:
            shape = experts.shape[1:]
            cand = np.concatenate([experts, *(np.broadcast_to(e, shape)[None] for e in extra)])
        self._cand = cand
        w = self.weights
        out = w[:, 0, None] * cand[0]
        for k in range(1, self.k):
            out = out + w[:, k, None] * cand[k]
        return out

    def update(self, symbols: np.ndarray) -> None:
        """Learn from the symbols (``(B,)`` free-symbol indices) that followed :meth:`predict`."""
        cand = self._cand
        if cand is None:
            return
        rows = np.arange(symbols.shape[0])
        hit = cand[:, rows, symbols].T  # (B, K): each candidate's frequency of what happened
        w = self.weights * hit
        total = w.sum(axis=1, keepdims=True)
        w = (w << 14) // np.maximum(total >> (FREQ_BITS), 1)
        if self.share:
            moved = (w * self.share) >> SHARE_BITS
            w = w - moved + moved.sum(axis=1, keepdims=True) // self.k
        self.weights = np.maximum(w, 1)
        if self.geometric and self.lr:
            logs = self._logs
            g = cand[self.n]
            expected = (logs * g[None]).sum(axis=-1) >> FREQ_BITS  # (n, B)
            diff = logs[:, rows, symbols] - expected
            step = (self.lr * diff.sum(axis=1)) // (symbols.shape[0] << 16)
            self.v = np.clip(self.v + step, V_MIN, V_MAX)
        self._cand = self._logs = None
