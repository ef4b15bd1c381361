"""The float prior's digit path: next-hex-digit distributions for symbol-level priors.

A mixture prior combines experts symbol by symbol, so the float model must also say how likely
each next hex digit is, given the digits before it. The session follows the float model's fields
as they appear in most-significant-first hex: the first digits of a value carry sign and exponent
(context: the previous value's leading digits and this value's digits so far), the next ones the
top mantissa (context: the two digits before), the rest is noise except in exact zeros (context:
"all digits so far zero").

Counts are shared by all windows of a batch and updated in lock-step, as the ``adaptive`` prior
does, and returned as *linear* scores (integer-valued counts): the coder's probabilities are then
exact IEEE divisions, identical on every CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmgc_core.components.interfaces import ContextScores, FeedingSession

INITIAL = 0.25
LIMIT = float(1 << 20)


class DigitSession(FeedingSession):
    def __init__(self, alphabet: Sequence[bytes], rows: int, pattern: Sequence[int]) -> None:
        self._size = len(alphabet)
        self._period = len(pattern)
        self._free = [q for q in range(self._period) if pattern[q] < 0]
        self._slot = {q: k for k, q in enumerate(self._free)}  # phase -> digit index in group
        n_digits = max(len(self._free), 1)
        self._counts = np.full((n_digits, 257, self._size), INITIAL, dtype=np.float64)
        self._digits = np.zeros((n_digits, rows), dtype=np.int64)  # this group's digits so far
        self._prev = np.zeros((2, rows), dtype=np.int64)  # previous group's first two digits
        self._zero = np.ones(rows, dtype=bool)  # every digit of this group so far was 0
        self._pos = 0

    def _context(self, k: int) -> np.ndarray:
        d = self._digits
        if k == 0:
            return self._prev[0] * 16 + self._prev[1]
        if k == 1:
            return d[0] * 16 + self._prev[1]
        if k <= 3:
            return d[k - 2] * 16 + d[k - 1]
        return np.where(self._zero, 256, d[k - 1])

    def _scores(self) -> ContextScores:
        q = self._pos % self._period
        k = self._slot.get(q, 0)
        return ContextScores(self._counts[k], self._context(k), linear=True)

    def _feed(self, symbols: np.ndarray) -> None:
        size = self._size
        for column in np.asarray(symbols, dtype=np.int64).T:
            q = self._pos % self._period
            k = self._slot.get(q)
            if k is not None:
                ctx = self._context(k)
                table = self._counts[k]
                table += np.bincount(ctx * size + column, minlength=257 * size).reshape(257, size)
                full = table.sum(axis=1) > LIMIT
                if full.any():
                    table[full] *= 0.5
                self._digits[k] = column
                self._zero &= column == 0
                if k == len(self._free) - 1:  # group complete
                    self._prev[0] = self._digits[0]
                    self._prev[1] = self._digits[min(1, len(self._free) - 1)]
                    self._zero[:] = True
            self._pos += 1
