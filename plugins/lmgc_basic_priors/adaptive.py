"""Adaptive prior: online symbol counts in the context (position within the period, previous data
symbol).

The previous data symbol is the one just before in the same group, or, for a group's first data
symbol, the first data symbol of the previous group (sign and exponent digits of neighbouring
values are alike). All windows of a batch share the count tables, and rows with the same context
share a distribution, so the coder codes a step with at most one quantized model per context:
vectorised over the batch, no per-symbol Python. Counts start at ``initial`` and a table is halved
when its total passes ``limit``, so the model follows drifting statistics.

Version 3 hands the counts to the coder as *linear* scores (exact division, same numbers on every
CPU). Version 2 handed over ``np.log(counts)``, which the coder turned back with ``np.exp``: those
streams decode only on a CPU whose numpy picks the same SIMD kernels as the encoding machine's
(:meth:`AdaptivePrior.for_stream` selects that path for them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmgc_core.components.interfaces import JSON, ContextScores, FeedingSession, Prior, PriorSession
from lmgc_core.util.errors import ConfigError


def _context_phases(pattern: Sequence[int]) -> np.ndarray:
    """For each phase of the period, the phase whose last symbol is the context."""
    period = len(pattern)
    free = [q for q in range(period) if pattern[q] < 0]
    source = np.arange(period)
    for q in range(period):
        before = [f for f in free if f < q]
        source[q] = before[-1] if before else q  # same phase, previous group
    return source


class _AdaptiveSession(FeedingSession):
    def __init__(
        self, size: int, rows: int, pattern: Sequence[int], initial: float, limit: float
    ) -> None:
        self._period = len(pattern)
        self._size = size
        self._counts = np.full((self._period, size, size), initial, dtype=np.float64)
        self._history = np.zeros(
            (self._period, rows), dtype=np.int64
        )  # phase-major: contiguous rows
        self._source = _context_phases(pattern)
        self._limit = limit
        self._pos = 0
        self.legacy_log = False

    def _scores(self) -> ContextScores:
        q = self._pos % self._period
        rows = self._history[self._source[q]]
        if self.legacy_log:
            return ContextScores(np.log(self._counts[q]), rows)
        return ContextScores(self._counts[q], rows, linear=True)

    def _feed(self, symbols: np.ndarray) -> None:
        size = self._size
        for column in np.asarray(symbols, dtype=np.int64).T:
            q = self._pos % self._period
            ctx = self._history[self._source[q]]
            table = self._counts[q]
            table += np.bincount(ctx * size + column, minlength=size * size).reshape(size, size)
            totals = table.sum(axis=1)
            full = totals > self._limit
            if full.any():
                table[full] *= 0.5
            self._history[q] = column
            self._pos += 1


class AdaptivePrior(Prior):
    name = "adaptive"
    default_batch_size = 16384  # more rows per step: faster, and fewer cold starts
    default_window = 512  # the model ignores windows: short ones mean more rows per step (speed)
    thread_safe = True  # every open() builds its own session; the prior itself is read-only
    version = 3

    def __init__(self, initial: float = 0.25, limit: int = 1 << 20) -> None:
        if (
            isinstance(initial, bool)
            or not isinstance(initial, int | float)
            or not 0 < initial <= 1 << 20  # finite: headers are JSON (no Infinity)
        ):
            raise ConfigError(f"initial count must be a number in (0, 2**20], not {initial!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 256 <= limit <= 1 << 30:
            raise ConfigError(f"limit must be an integer in [256, 2**30], not {limit!r}")
        self.initial = float(initial)
        self.limit = int(limit)

    def get_config(self) -> JSON:
        return {"initial": self.initial, "limit": self.limit}

    def fingerprint(self) -> JSON:
        return {
            "prior": "adaptive",
            "version": self.version,
            "initial": self.initial,
            "limit": self.limit,
        }

    def for_stream(self, recorded: Mapping[str, Any]) -> Prior:
        """Version-2 streams (log-domain scores) decode through the old path."""
        if recorded.get("version") == 2:
            legacy = AdaptivePrior(self.initial, self.limit)
            legacy.version = 2
            legacy.check_fingerprint(recorded)
            return legacy
        return super().for_stream(recorded)

    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        session = _AdaptiveSession(len(alphabet), batch_size, pattern, self.initial, self.limit)
        session.legacy_log = self.version == 2
        return session
