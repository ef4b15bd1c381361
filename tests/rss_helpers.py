"""Running the real ``lmgc`` command in a fresh process and reading its own peak RSS.

``VmHWM`` from ``/proc/self/status``, read by the process itself as it exits, not the
``ru_maxrss`` a parent gets: that one keeps the parent's peak across fork (or vfork) + exec, so
a big pytest process would inflate it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

_SCRIPT = """
import os, sys
from lmgc_core.__main__ import main
sys.argv = ["lmgc", *sys.argv[1:]]
try:
    main()
finally:
    hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
    with open(os.environ["LMGC_TEST_HWM"], "w") as f:
        f.write(hwm[0].split()[1])
"""


def run_lmgc(*args: object, timeout: float = 600) -> tuple[int, str, float]:
    """``lmgc ARGS`` in a subprocess: exit status, stderr, peak RSS in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {**os.environ, "LMGC_TEST_HWM": str(hwm)}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        rss = int(hwm.read_text()) / 1024 if hwm.exists() else float("nan")
    return done.returncode, done.stderr, rss
