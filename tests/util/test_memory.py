"""The memory probe that bounds allocations a header sizes (lmgc_core.util.memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmgc_core.util.memory import available_bytes


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="Linux only")
def test_available_memory_is_at_most_the_machine_s():
    total = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    room = available_bytes()
    assert room is not None and 0 < room <= total


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc: Linux")
def test_an_address_space_limit_lowers_it():
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))\n"
        "from lmgc_core.util.memory import available_bytes\n"
        "print(available_bytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    room = int(out.stdout)
    assert 0 < room < 3 << 30  # less what the interpreter has mapped already


def test_a_cgroup_s_page_cache_counts_as_room(monkeypatch):
    """memory.current counts the page cache the kernel reclaims: a container at its limit
    after reading a few GB had no room by ``max - current``, and every KV cache was refused."""
    from lmgc_core.util import memory

    fake = {
        "/sys/fs/cgroup/memory.max": "8589934592\n",
        "/sys/fs/cgroup/memory.current": "8579448832\n",
        "/sys/fs/cgroup/memory.stat": "anon 536870912\nfile 8042577920\nkernel 1\n",
    }
    real = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: fake.get(str(self)) or real(self, *a, **k)
    )
    assert memory._cgroup_room() == 8589934592 - 8579448832 + 8042577920
