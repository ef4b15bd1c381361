"""One ``bytes`` from many pieces, copied on several threads when it is big.

``b"".join`` copies on one thread, and most of its time is the page faults of the fresh buffer,
not the copy: for the fast level's 75 MB stream of 100 MB, ~55 ms of a 250 ms two-thread
compress, the serial step that held its speed-up at 1.72-1.78x. Split in byte ranges, two
threads take ~30 ms (numpy's copies and the kernel's page faults run without the GIL).
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .parallel import map_ordered, resolve_jobs

PARALLEL_JOIN_BYTES = 4 << 20
"""Bytes per thread below which one thread joins: starting threads costs more than it saves."""

_PARALLEL = sys.implementation.name == "cpython"  # the C API that makes an unfilled bytes


def join_bytes(pieces: Sequence[Any], jobs: int | None = 1) -> bytes:
    """``b"".join(pieces)`` (any contiguous buffers), on up to ``jobs`` threads when each would
    copy at least :data:`PARALLEL_JOIN_BYTES`. The same bytes whatever ``jobs``."""
    views = [memoryview(p).cast("B") if not isinstance(p, bytes) else p for p in pieces]
    total = sum(len(v) for v in views)
    workers = min(resolve_jobs(jobs), total // PARALLEL_JOIN_BYTES)
    if workers <= 1 or not _PARALLEL:
        return b"".join(views)
    out, at = _unfilled_bytes(total)
    dst = np.asarray(_Memory(at, total, out))  # holds ``out`` while a thread writes into it
    starts = np.cumsum([0] + [len(v) for v in views]).tolist()

    def fill(worker: int) -> None:
        """Copy the output's bytes ``[lo, hi)``, the ``worker``-th of ``workers`` even ranges."""
        lo, hi = total * worker // workers, total * (worker + 1) // workers
        first = int(np.searchsorted(starts, lo, side="right")) - 1
        for i in range(first, len(views)):
            a, b = max(starts[i], lo), min(starts[i + 1], hi)
            if a >= hi:
                break
            if a < b:
                dst[a:b] = np.frombuffer(views[i], np.uint8, b - a, a - starts[i])

    map_ordered(fill, range(workers), workers)
    return out


class _Memory:
    """``size`` writable bytes at ``address`` (inside ``owner``, kept alive) as numpy sees them
    (no ctypes array type: ctypes keeps one per length for good)."""

    def __init__(self, address: int, size: int, owner: object) -> None:
        self.owner = owner
        self.__array_interface__ = {
            "data": (address, False),
            "shape": (size,),
            "typestr": "|u1",
            "version": 3,
        }


@functools.cache
def _c_api() -> tuple[Any, Any]:
    make = ctypes.pythonapi.PyBytes_FromStringAndSize
    make.restype, make.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
    address = ctypes.pythonapi.PyBytes_AsString
    address.restype, address.argtypes = ctypes.c_void_p, (ctypes.py_object,)
    return make, address


def _unfilled_bytes(size: int) -> tuple[bytes, int]:
    """A new ``bytes`` of ``size`` (> 1: never a shared singleton) whose contents are not set,
    and the address of its contents: ``PyBytes_FromStringAndSize(NULL, size)``, which the C API
    lets its creator fill before anyone else sees it."""
    make, address = _c_api()
    out = make(None, size)
    return out, int(address(out))
