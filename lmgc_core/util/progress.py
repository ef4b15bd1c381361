"""The progress bar of long CLI runs: bytes of array data done, on stderr, per coded block.

The pipeline reports progress in *symbols* per block; a chunk's symbols are scaled to its bytes
here, and every chunk ends exactly on its byte count, so the bar stays right whatever unit a
prior's fast path reports in. tqdm shows rate (B/s) and ETA, waits a second before appearing
(short runs stay silent; ``LMGC_PROGRESS_DELAY`` sets other seconds) and is off when stderr is
not a terminal or with ``--quiet``.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

DELAY_ENV = "LMGC_PROGRESS_DELAY"


def bar_delay() -> float:
    """Seconds before a bar appears: 1 s, or ``$LMGC_PROGRESS_DELAY`` when it is a number."""
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, "1")))
    except ValueError:
        return 1.0


class _NoBar:
    """What stands for the bar when none is shown: tqdm (and the multiprocessing, logging and
    platform modules it loads) is then never imported, a few hundredths of a second of every
    scripted or piped run."""

    def update(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def _on_terminal(f: Any) -> bool:
    try:
        return bool(f.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    def __init__(self, total_bytes: int, label: str, quiet: bool = False) -> None:
        if quiet:  # the language models' own per-step bars too
            set_progress(False)

        self._bar: Any = _NoBar()
        if not quiet and _on_terminal(sys.stderr):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_bytes,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                leave=False,
                delay=bar_delay(),
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self._lock = threading.Lock()  # chunks coded on several threads report at once
        self._open: list[ChunkProgress] = []
        self.done = 0
        """Bytes reported so far (also when the bar is off)."""

    def _advance(self, step: int) -> None:
        with self._lock:
            self.done += step
            self._bar.update(step)

    def chunk(self, nbytes: int, n_symbols: int) -> ChunkProgress:
        """A pipeline progress callback for one chunk of ``nbytes`` (``n_symbols`` symbols).
        Several chunks may be open at once (coded on different threads)."""
        part = ChunkProgress(self, nbytes, n_symbols)
        with self._lock:
            self._open = [p for p in self._open if p.left] + [part]
        return part

    def finish_chunk(self) -> None:
        """Finish every open chunk: each ends exactly on its byte count."""
        with self._lock:
            parts, self._open = self._open, []
        for part in parts:
            part.finish()

    def close(self) -> None:
        self.finish_chunk()
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChunkProgress:
    """One chunk's share of the bar: symbols scaled to its bytes, never more than them."""

    def __init__(self, progress: Progress, nbytes: int, n_symbols: int) -> None:
        self._progress = progress
        self.left = nbytes
        self._scale = nbytes / n_symbols if n_symbols else 0.0

    def _take(self, step: int) -> None:
        with self._progress._lock:
            step = min(self.left, step)
            self.left -= step
        if step > 0:
            self._progress._advance(step)

    def __call__(self, symbols: int) -> None:
        self._take(round(symbols * self._scale))

    def finish(self) -> None:
        self._take(self.left)


# -- the language models' per-step bars --------------------------------------------------------

PROGRESS_ENV = "LMGC_PROGRESS"
OFF_VALUES = ("0", "false", "no", "off")
"""What turns an lmgc switch in the environment off (``LMGC_PROGRESS``, ``LMGC_DEBUG``)."""
_progress_enabled: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Show (``True``), hide (``False``) or auto-detect (``None``: when stderr is a terminal)
    the language models' progress bars; ``LMGC_PROGRESS=0/1`` in the environment does the same.
    The CLI's ``--quiet`` turns them off."""
    global _progress_enabled
    _progress_enabled = enabled


def lm_progress(total: int, label: str) -> Any:
    """A tqdm bar on stderr counting the tokens an LM session computes (one per window row and
    position): a CPU language model takes minutes per batch, so every LM run shows where it is.
    Returns an object with ``update(n)`` and ``close()`` (a disabled bar when hidden)."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=label,
        unit="tok",
        unit_scale=True,
        leave=False,
        delay=bar_delay(),  # short runs stay silent
        disable=lm_bars_disabled(),
        file=sys.stderr,
    )


def lm_bars_disabled() -> bool | None:
    """tqdm's ``disable`` for the language models' bars: ``True`` hidden (``--quiet``,
    ``LMGC_PROGRESS=0``), ``False`` shown, ``None`` shown where stderr is a terminal."""
    enabled = _progress_enabled
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in OFF_VALUES:
        enabled = False
    elif env in ("1", "true", "yes", "on") and enabled is None:
        enabled = True
    return None if enabled is None else not enabled
