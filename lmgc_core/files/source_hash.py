"""The SHA-256 and XXH3-128 of a whole source file, read once on a thread of its own beside the
reads and the coding of the same file.

The archive records both: the SHA-256 names the file (``lmgc ls``, a base's identity), the
XXH3-128 is what decompress checks the rebuilt file against (~7.5 GB/s from the ``xxhash``
package against SHA-256's ~1 GB/s, which took half of a 100 MB level-1 decompress).

Kept apart from :mod:`lmgc_core.files.filecodec` (which needs numpy) so the CLI can start it before
the coding modules load: on a spare core the hash then runs while the interpreter is still busy
importing, instead of beside the first chunks. It stops at the next block when cancelled, so an
error or Ctrl-C does not wait for the rest of a large file to be hashed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from types import TracebackType
from typing import IO

import xxhash

from lmgc_core.util.parallel import resolve_jobs

BLOCK = 8 << 20


class HashCancelled(Exception):
    """The hash was cancelled before it was done (its value was no longer wanted)."""


def positional_fd(f: IO[bytes]) -> int | None:
    """``f``'s descriptor when positional reads (``os.preadv``) work on it."""
    if not hasattr(os, "preadv"):  # pragma: no cover - Windows
        return None
    try:
        fd = f.fileno()
        os.pread(fd, 0, 0)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd


def file_digests(f: IO[bytes], stop: threading.Event | None = None) -> dict[str, str]:
    """``{"sha256": ..., "xxh3_128": ...}`` (hex) of the whole file, read once. With a
    descriptor it reads by position (``os.preadv``), leaving ``f``'s position alone, so it can
    run on a thread beside the chunk reads. ``stop`` set: :class:`HashCancelled` at the next
    block.

    The reads and the hashing release the GIL, but each block must take it back, which costs up
    to the interpreter's switch interval (5 ms) while another thread runs Python (the CLI
    importing numpy): blocks of :data:`BLOCK` into one reused buffer keep those waits few."""
    h, x = hashlib.sha256(), xxhash.xxh3_128()
    fd = positional_fd(f)
    if fd is None:
        f.seek(0)
        while block := f.read(BLOCK):
            if stop is not None and stop.is_set():
                raise HashCancelled
            h.update(block)
            x.update(block)
        return {"sha256": h.hexdigest(), "xxh3_128": x.hexdigest()}
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    pos = 0
    while n := os.preadv(fd, [buf], pos):
        if stop is not None and stop.is_set():
            raise HashCancelled
        h.update(view[:n])
        x.update(view[:n])
        pos += n
    return {"sha256": h.hexdigest(), "xxh3_128": x.hexdigest()}


def file_state(f: IO[bytes]) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a regular file (``None`` for a pipe or a stream). Not the ctime:
    a chmod, a link or a rename changes it, and refused files whose bytes had not changed."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


class FileHash:
    """``file_digests(f)``, started at once on a thread of its own when there is a spare core
    (``jobs > 1``) and ``f`` allows positional reads; otherwise computed when :meth:`result` is
    first asked. Use it as a context manager (its exit cancels an unfinished hash and waits the
    at most one block it takes to stop) and close ``f`` only after it."""

    def __init__(self, f: IO[bytes], jobs: int | None) -> None:
        self._f = f
        self.state = file_state(f)
        """The file's :func:`file_state` when hashing began: a change after it, even before
        the coding starts, is refused at the end (the hash would be of other bytes)."""
        self._stop = threading.Event()
        self._value: dict[str, str] | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if resolve_jobs(jobs) > 1 and positional_fd(f) is not None:
            self._thread = threading.Thread(target=self._run, name="lmgc-file-hash", daemon=True)
            try:
                self._thread.start()
            except RuntimeError:  # no thread can start here: hashed when asked
                self._thread = None

    def _run(self) -> None:
        try:
            self._value = file_digests(self._f, self._stop)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> str:
        """The SHA-256's hex digest (the hash's own error, if it failed)."""
        return self.digests()["sha256"]

    def digests(self) -> dict[str, str]:
        """Both hex digests by name, ``sha256`` and ``xxh3_128`` (the hash's own error)."""
        if self._thread is None:
            if self._value is None:
                self._value = file_digests(self._f)
            return self._value
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    def cancel(self) -> None:
        """Stop an unfinished hash; returns once its thread has let go of the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FileHash:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
