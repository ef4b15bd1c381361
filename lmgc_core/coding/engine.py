"""The step loop shared by encoder, decoder and estimator.

:func:`drive` walks a prior session over one batch of windows, position by position. At each data
(free) position it turns the session's scores into distributions (one place:
:func:`lmgc_core.coding.probability.distributions`) and asks a *chooser* for the batch's next
symbols.
The encoder's chooser codes the known symbols, the decoder's decodes them, the estimator's adds up
their ideal code length; everything the prior sees is identical in all three cases, which is what
makes decoding bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lmgc_core.coding.probability import distributions, ideal_bits
from lmgc_core.components.interfaces import ContextScores, Decoder, Encoder, Prior
from lmgc_core.util.errors import PluginError, StreamError

Chooser = Callable[["Step"], np.ndarray]
"""``chooser(step) -> free-symbol index per row (B,)``; rows that are not active get 0."""


@dataclass
class Step:
    """One data position of a batch, as the chooser sees it."""

    pos: int
    probs: np.ndarray
    """``(C, F)`` coding distributions over the free symbols."""
    rows: np.ndarray | None
    """``(B,)`` row -> index into ``probs``; ``None`` when ``probs`` has one row per row (or one
    row for all)."""
    active: np.ndarray
    """``(B,)`` rows whose window still has a symbol at ``pos``."""

    def groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(row indices, probs (1|n, F))`` in the fixed order both coder sides use."""
        act = np.flatnonzero(self.active)
        if self.rows is None:
            probs = self.probs if self.probs.shape[0] == 1 else self.probs[act]
            return [(act, probs)]
        ctx = self.rows[act]
        small = ctx.astype(np.uint16 if self.probs.shape[0] <= 1 << 16 else np.int64)
        order = np.argsort(small, kind="stable")  # radix sort for small integer contexts
        sizes = np.bincount(ctx, minlength=self.probs.shape[0])
        act = act[order]
        groups, start = [], 0
        for c in np.flatnonzero(sizes):
            end = start + int(sizes[c])
            groups.append((act[start:end], self.probs[c : c + 1]))
            start = end
        return groups


@dataclass(frozen=True)
class Layout:
    """How a part's symbol stream is cut into windows and batches (derived, never stored twice)."""

    n_symbols: int
    period: int
    window: int
    """Tokens per window, counting the BOS the prior conditions each window on."""
    batch: int

    @property
    def window_symbols(self) -> int:
        return max(self.period, (self.window - 1) // self.period * self.period)

    def windows(self) -> list[tuple[int, int]]:
        step = self.window_symbols
        return [(s, min(step, self.n_symbols - s)) for s in range(0, self.n_symbols, step)]

    def n_batches(self) -> int:
        """``len(list(self.batches()))``, by arithmetic: a header's ``n_symbols`` is checked
        against its listed blocks before millions of windows are listed."""
        n_windows = -(-self.n_symbols // self.window_symbols)
        return -(-n_windows // self.batch)

    def batches(self) -> Iterator[list[tuple[int, int]]]:
        wins = self.windows()
        for i in range(0, len(wins), self.batch):
            yield wins[i : i + self.batch]


def drive(
    prior: Prior,
    alphabet: Sequence[bytes],
    pattern: Sequence[int],
    free_symbols: Sequence[int],
    lengths: np.ndarray,
    batch_rows: int,
    window: int,
    choose: Chooser,
) -> np.ndarray:
    """Run one batch; returns the ``(max_len, rows)`` symbol matrix (alphabet indices,
    position-major so that a step touches contiguous memory).

    ``lengths`` are the windows' symbol counts (multiples of the period). The session is always
    opened with ``batch_rows`` rows, so a short last batch is padded with empty windows and
    computes exactly as the encoder's did.
    """
    period = len(pattern)
    pat = np.asarray(pattern, dtype=np.int64)
    free = np.asarray(free_symbols, dtype=np.int64)
    lens = np.zeros(batch_rows, dtype=np.int64)
    lens[: len(lengths)] = lengths
    total = int(lens.max(initial=0))
    out = np.zeros((total, batch_rows), dtype=np.int64)
    if total == 0:
        return out
    forced = pat[np.arange(total) % period]
    known = forced >= 0
    out[known] = forced[known][:, None]

    lead = int(np.argmin(known)) if not known.all() else total
    wants = getattr(prior, "wants_free_symbols", False)
    extra = {"free_symbols": tuple(int(s) for s in free)} if wants else {}
    session = prior.open(alphabet, batch_rows, window, tuple(pattern), **extra)
    size = len(alphabet)
    try:
        scores = session.start(out[:lead].T)
        pos = lead
        while pos < total:
            _check_scores(scores, batch_rows, size, prior)
            if isinstance(scores, ContextScores):
                rows = None if scores.rows is None else np.asarray(scores.rows)
                probs = distributions(scores.table, free, scores.linear)
                step = Step(pos, probs, rows, lens > pos)
            else:
                step = Step(pos, distributions(scores, free), None, lens > pos)
            out[pos] = free[choose(step)]
            nxt = pos + 1
            while nxt < total and known[nxt]:
                nxt += 1
            if nxt >= total:
                break
            scores = session.advance(out[pos:nxt].T)
            pos = nxt
    finally:
        session.close()
    return out


def _check_scores(scores: object, rows: int, size: int, prior: Prior) -> None:
    """A ``PluginError`` naming ``prior`` for scores that are not what :class:`PriorSession`
    promises (``(rows, size)``, ``(1, size)``, or :class:`ContextScores` whose ``rows`` index
    its table): they failed deep in the engine or the coder (``IndexError``, "`symbols` argument
    has wrong length"), naming no prior. The conformance kit checks more, where authors run it."""
    context = isinstance(scores, ContextScores)
    table = scores.table if context else scores  # type: ignore[union-attr]
    shape = getattr(table, "shape", None)
    ok = isinstance(shape, tuple) and len(shape) == 2 and shape[1] == size
    which = getattr(scores, "rows", None) if context else None
    if ok and which is not None:
        which = np.asarray(which)
        ok = (
            which.shape == (rows,)
            and which.dtype.kind in "iu"
            and (rows == 0 or 0 <= int(which.min()) <= int(which.max()) < shape[0])  # type: ignore[index]
        )
    elif ok:
        ok = shape[0] in (1, rows)  # type: ignore[index]
    if not ok:
        got = f"ContextScores with table {shape}" if context else f"{type(scores).__name__} {shape}"
        raise PluginError(
            f"prior {prior.name!r} gave scores that are not ({rows}, {size}), (1, {size}) or "
            f"ContextScores rows into their table: {got} (its plugin's session is wrong; "
            "lmgc_core.testing.check_prior shows more)"
        )


def _free_index(free_symbols: Sequence[int]) -> np.ndarray:
    lookup = np.full(max(free_symbols) + 1, -1, dtype=np.int32)
    lookup[np.asarray(free_symbols)] = np.arange(len(free_symbols), dtype=np.int32)
    return lookup


def encoding_chooser(symbols: np.ndarray, free_symbols: Sequence[int], encoder: Encoder) -> Chooser:
    """Codes the known ``symbols`` (``(len, rows)`` alphabet indices) step by step."""
    lookup = _free_index(free_symbols)

    def choose(step: Step) -> np.ndarray:
        idx = lookup[symbols[step.pos]]
        for rows, probs in step.groups():
            encoder.encode(idx[rows], probs)
        idx[~step.active] = 0
        return idx

    return choose


SYMBOL_SLACK_BITS = 0.1
"""How many more bits a symbol's -log2 p may count than the coder spent on it: the range coder
codes probabilities quantized to 24 bits, which for p >= 2^-20 (the floor) differ by at most
~1/16 of p (0.09 bits)."""
FLUSH_SLACK_BITS = 256
"""Bits a block may count beyond its own and the symbols' slack (the coder's last words)."""


def decoding_chooser(decoder: Decoder, nbytes: int | None = None) -> Chooser:
    """Decodes each step's symbols from ``decoder``. ``nbytes``: the block's length. What is
    decoded cannot hold more information than the block has bits: once the symbols' code
    length (the sum of -log2 p, less :data:`SYMBOL_SLACK_BITS` each) passes them and
    :data:`FLUSH_SLACK_BITS`, the block is truncated or forged, and decoding stops there. It
    went on with as many symbols as the header declared: a 178-byte forged LM stream decoded
    garbage for ~65,000 steps (minutes) before its checksum could fail."""
    budget = None if nbytes is None else 8.0 * nbytes + FLUSH_SLACK_BITS
    spent = 0.0

    def choose(step: Step) -> np.ndarray:
        nonlocal spent
        idx = np.zeros(step.active.shape[0], dtype=np.int32)
        for rows, probs in step.groups():
            got = decoder.decode(probs, rows.size)
            idx[rows] = got
            if budget is not None and rows.size:
                p = probs[0, got] if probs.shape[0] == 1 else probs[np.arange(rows.size), got]
                spent += float(-np.log2(p).sum()) - SYMBOL_SLACK_BITS * rows.size
        if budget is not None and spent > budget:
            raise StreamError(
                f"a block of {nbytes} bytes decodes to more information than it holds "
                f"({spent:.0f} bits and more): it is truncated or forged"
            )
        return idx

    return choose


class BitCounter:
    """Estimator's chooser: adds up the ideal code length of the known symbols."""

    def __init__(self, symbols: np.ndarray, free_symbols: Sequence[int]) -> None:
        self.bits = 0.0
        self._symbols = symbols
        self._lookup = _free_index(free_symbols)

    def __call__(self, step: Step) -> np.ndarray:
        idx = self._lookup[self._symbols[step.pos]]
        for rows, probs in step.groups():
            self.bits += ideal_bits(probs, idx[rows])
        idx[~step.active] = 0
        return idx


def window_matrix(symbols: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    """The batch's windows as a position-major ``(max_len, rows)`` matrix (zero padded).

    Windows are consecutive and all full but the last, so this is a reshape, not a loop."""
    if not windows:
        return np.zeros((0, 0), dtype=np.int64)
    width = windows[0][1]
    start = windows[0][0]
    mat = np.zeros((len(windows), width), dtype=np.int64)
    flat = symbols[start : start + sum(n for _, n in windows)]
    mat.reshape(-1)[: flat.size] = flat
    return np.ascontiguousarray(mat.T)


def unwindow(mat: np.ndarray, windows: list[tuple[int, int]], out: np.ndarray) -> None:
    """Inverse of :func:`window_matrix`: write the windows back into the flat stream ``out``."""
    if windows:
        start = windows[0][0]
        n = sum(k for _, k in windows)
        out[start : start + n] = np.ascontiguousarray(mat.T).reshape(-1)[:n]
