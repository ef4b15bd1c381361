"""Start-up of the ``lmgc`` command (issue 20: the fixed cost no ``--jobs`` can share out):
plugins' commands are added when a command that is not built in is looked for, so built-in
commands that need no plugin (``--version``, ``ls``) load none, and every plugin command still
answers and is listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.cli_helpers import lmgc

PROBE = """
import json, sys
sys.argv = ["lmgc", *json.loads(sys.argv[1])]
code = 0
try:
    from lmgc_core.__main__ import main
    main()
except SystemExit as exc:
    code = exc.code or 0
plugins = sorted(m for m in sys.modules if m.startswith("lmgc_") and m != "lmgc_core"
                 and not m.startswith("lmgc_core."))
print(json.dumps({"code": code, "plugins": plugins}))
"""


def _probe(*args: str) -> dict:
    """Run ``lmgc ARGS`` in a fresh interpreter; its exit status and the plugin modules loaded."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_builtin_commands_that_need_no_plugin_load_none(tmp_path: Path) -> None:
    np.save(tmp_path / "g.npy", np.linspace(-1, 1, 300, dtype=np.float32))
    lmgc("compress", "-q", tmp_path / "g.npy")
    assert _probe("--version") == {"code": 0, "plugins": []}
    assert _probe("ls", str(tmp_path / "g.npy.lmgc")) == {"code": 0, "plugins": []}


def test_plugin_commands_still_answer_and_are_listed() -> None:
    run = _probe("collect", "--help")  # lmgc_bench's command, found on demand
    assert run["code"] == 0 and "lmgc_bench" in run["plugins"], run
    helped = subprocess.run(
        [sys.executable, "-m", "lmgc_core", "--help"], capture_output=True, text=True, check=True
    )
    assert "collect" in helped.stdout and "bench" in helped.stdout, helped.stdout
