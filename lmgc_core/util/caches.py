"""Small process-wide caches (dicts kept in insertion order, oldest first) that threads share
without a lock: a decode on one thread may evict while another inserts."""

from __future__ import annotations

from typing import Any


def drop_oldest(cache: dict[Any, Any], limit: int) -> None:
    """Drop ``cache``'s oldest entries until fewer than ``limit`` remain. Another thread may
    change the dict meanwhile (iterating it then raises, or it empties): the loop stops there,
    and the next insertion goes on evicting, so the cache stays within a few entries of
    ``limit``."""
    while len(cache) >= limit:
        try:
            cache.pop(next(iter(cache)), None)
        except (RuntimeError, StopIteration):
            return
