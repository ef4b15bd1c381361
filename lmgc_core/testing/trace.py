"""Replays the engine's exact prior calls over some data and fingerprints what the coder would
see, validating every score the session returns on the way.

Decoding is exact only if the same calls give the same scores; the kit compares these traces
across sessions, instances, batch layouts and processes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmgc_core.coding.engine import Layout, Step, drive, window_matrix
from lmgc_core.components.interfaces import ContextScores


class ScoreError(AssertionError):
    """A session returned scores of the wrong shape, type or value."""


def _validate(scores: Any, rows: int, size: int, call: str) -> None:
    if isinstance(scores, ContextScores) and scores.rows is None:  # one table row per row
        values = np.asarray(scores.table)
        if values.ndim != 2 or values.shape[0] not in (1, rows) or values.shape[1] != size:
            raise ScoreError(
                f"{call}: ContextScores.table is {values.shape} with rows=None, not "
                f"({rows}, {size}) or (1, {size})"
            )
    elif isinstance(scores, ContextScores):
        table, idx = np.asarray(scores.table), np.asarray(scores.rows)
        if table.ndim != 2 or table.shape[1] != size:
            raise ScoreError(f"{call}: ContextScores.table is {table.shape}, not (C, {size})")
        if idx.shape != (rows,) or idx.dtype.kind not in "iu":
            raise ScoreError(
                f"{call}: ContextScores.rows must be ({rows},) ints, not {idx.shape} {idx.dtype}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
            raise ScoreError(f"{call}: ContextScores.rows points outside the table")
        values = table
    else:
        if not isinstance(scores, np.ndarray):
            raise ScoreError(
                f"{call}: returned {type(scores).__name__}, not an ndarray or ContextScores"
            )
        if scores.ndim != 2 or scores.shape[0] not in (1, rows) or scores.shape[1] != size:
            raise ScoreError(
                f"{call}: scores have shape {scores.shape}, not ({rows}, {size}) or (1, {size})"
            )
        values = scores
    if values.dtype.kind != "f":
        raise ScoreError(f"{call}: scores must be floats, not {values.dtype}")
    if np.isnan(values).any() or np.isposinf(values).any():
        raise ScoreError(f"{call}: scores hold NaN or +inf")


class _Session:
    def __init__(self, inner: Any, rows: int, size: int) -> None:
        self._inner, self._rows, self._size = inner, rows, size

    def start(self, prefix: np.ndarray) -> Any:
        scores = self._inner.start(prefix)
        _validate(scores, self._rows, self._size, f"start(prefix {prefix.shape})")
        return scores

    def advance(self, symbols: np.ndarray) -> Any:
        scores = self._inner.advance(symbols)
        _validate(scores, self._rows, self._size, f"advance(symbols {symbols.shape})")
        return scores

    def close(self) -> None:
        self._inner.close()


class _Watched:
    """A prior whose sessions validate every answer (the engine only calls ``open``)."""

    def __init__(self, prior: Any) -> None:
        self._prior = prior
        self.wants_free_symbols = getattr(prior, "wants_free_symbols", False)

    def open(
        self, alphabet: Sequence[bytes], batch_size: int, window: int, pattern: Any, **extra: Any
    ) -> Any:
        inner = self._prior.open(alphabet, batch_size, window, pattern, **extra)
        return _Session(inner, batch_size, len(alphabet))


class _Recorder:
    """A chooser that feeds the known symbols (as the encoder does) and records the coding
    distributions, overall (a hash) and per window."""

    def __init__(self, mat: np.ndarray, free: Sequence[int], first_window: int) -> None:
        self._mat = mat
        self._lookup = np.full(max(free) + 1, -1, dtype=np.int64)
        self._lookup[np.asarray(free)] = np.arange(len(free))
        self._first = first_window
        self.hash = hashlib.sha256()
        self.per_window: dict[int, list[bytes]] = {}

    def __call__(self, step: Step) -> np.ndarray:
        idx = self._lookup[self._mat[step.pos]]
        for rows, probs in step.groups():
            self.hash.update(rows.tobytes())
            self.hash.update(np.ascontiguousarray(probs).tobytes())
            for k, row in enumerate(rows):
                dist = probs[k if probs.shape[0] > 1 else 0]
                self.per_window.setdefault(self._first + int(row), []).append(dist.tobytes())
        idx[~step.active] = 0
        return idx


def score_trace(
    prior: Any, serializer: Any, data: np.ndarray, window: int, batch: int
) -> tuple[str, dict[int, list[bytes]]]:
    """``(sha256 of every coding distribution, {window index: [distribution bytes...]})`` for
    coding ``data`` with the engine's layout of ``window`` tokens and ``batch`` rows."""
    symbols = serializer.to_symbols(np.ascontiguousarray(data).reshape(-1))
    layout = Layout(symbols.size, serializer.period, window, batch)
    total = hashlib.sha256()
    per_window: dict[int, list[bytes]] = {}
    first = 0
    watched = _Watched(prior)
    for wins in layout.batches():
        mat = window_matrix(symbols, wins)
        lengths = np.array([n for _, n in wins])
        rec = _Recorder(mat, serializer.free_symbols, first)
        drive(
            watched,  # type: ignore[arg-type]  # duck-typed: drive only calls open()
            serializer.alphabet,
            serializer.pattern,
            serializer.free_symbols,
            lengths,
            len(lengths),
            window,
            rec,
        )
        total.update(rec.hash.digest())
        per_window.update(rec.per_window)
        first += len(wins)
    return total.hexdigest(), per_window
