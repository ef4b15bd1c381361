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
