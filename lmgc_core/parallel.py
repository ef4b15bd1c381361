"""Ordered parallel map over threads: the one place that decides how many workers run.

Work items are independent (blocks, archive members, chunks) and their results are joined in
input order, so output bytes never depend on the number of workers. Threads, not processes: the
heavy kernels (numba ``nogil``, constriction, numpy on large arrays) release the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_jobs(jobs: int | None) -> int:
    """``None`` or ``0`` -> all cores; otherwise the given positive count."""
    if jobs is None or jobs == 0:
        return default_jobs()
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0:
        raise ValueError(f"jobs must be a non-negative integer, not {jobs!r}")
    return jobs


def map_ordered(fn: Callable[[T], R], items: Iterable[T], jobs: int | None = 1) -> list[R]:
    """``[fn(x) for x in items]``, run on up to ``jobs`` threads, results in input order."""
    seq: Sequence[T] = list(items)
    n = min(resolve_jobs(jobs), len(seq))
    if n <= 1:
        return [fn(x) for x in seq]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, seq))
