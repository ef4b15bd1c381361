"""How much memory this process can still get, for allocations sized by a stream's header.

Why: some allocations are sized by what a header declares before any byte of data is read (a
language model's KV cache of ``batch x window`` cells). Asking for more than the machine has
either fails deep in a library or, worse, succeeds lazily and swaps or gets the process killed
at the first write. A request above this figure is refused with a clear message instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_bytes() -> int | None:
    """The least of: the kernel's ``MemAvailable``, the cgroup's room (``memory.max`` less
    ``memory.current``, its page cache counted as free) and the address-space limit
    (``RLIMIT_AS``); None where none is known (not Linux)."""
    known = [n for n in (_meminfo_available(), _cgroup_room(), _address_limit()) if n is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The cgroup's limit less what it uses, its page cache not counted (the kernel reclaims
    it: a container that had just read a few GB showed no room at all)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        return max(0, int(limit) - used + _cgroup_stat("file"))
    except (OSError, ValueError):
        return None


def _cgroup_stat(key: str) -> int:
    try:
        for line in Path("/sys/fs/cgroup/memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _address_limit() -> int | None:
    try:
        import resource  # Unix only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:  # the process's current size, from its statm (pages)
        pages = int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[0])
        return max(0, soft - pages * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return soft


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"
