"""The progress bar: on a terminal, per block, with bytes/s and an ETA; silent with --quiet and
off a terminal (pipes, logs, the test-suite)."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import ml_dtypes
import numpy as np

from lmgc_core.util.progress import Progress

LMGC = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")


def test_chunk_callbacks_add_up_to_the_bytes():
    with Progress(1000, "test", quiet=True) as bar:
        first = bar.chunk(600, n_symbols=1350)
        second = bar.chunk(400, n_symbols=900)  # open at the same time (another thread's chunk)
        for _ in range(14):
            first(100)  # 1400 of 1350 symbols overshoot the chunk: clamped to its 600 bytes
        assert bar.done == 600
        second(450)
        assert bar.done == 800
        bar.finish_chunk()
        assert bar.done == 1000
        second(450)  # a finished chunk reports nothing more
        assert bar.done == 1000


def _stderr_on_a_terminal(args: list[str], delay: str = "0") -> str:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real size
    env = {**os.environ, "LMGC_PROGRESS_DELAY": delay}  # a fast machine finishes within 1 s
    proc = subprocess.Popen([LMGC, *args], stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO once the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_bar_on_a_terminal_and_quiet(tmp_path):
    rng = np.random.default_rng(1)
    values = (rng.standard_normal(6 << 20, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    np.save(tmp_path / "w.npy", values)  # 12 MiB in 12 blocks: the bar updates per block
    shown = _stderr_on_a_terminal(["compress", str(tmp_path / "w.npy"), "--chunk-size", "1048576"])
    assert "compress" in shown and "B/s" in shown and "<" in shown  # rate and ETA (tqdm "<")
    quiet = _stderr_on_a_terminal(["decompress", f"{tmp_path / 'w.npy'}.lmgc", "-o",
                                   str(tmp_path / "b.npy"), "-q"])  # fmt: skip
    assert quiet == ""
    np.save(tmp_path / "small.npy", values[:1000])
    assert _stderr_on_a_terminal(["compress", str(tmp_path / "small.npy")], delay="1") == ""


def test_without_a_terminal_tqdm_is_not_loaded():
    """Piped and scripted runs (no terminal on stderr) never show a bar, so they skip tqdm's
    import; the count of bytes done is still kept."""
    code = (
        "import sys; from lmgc_core.util.progress import Progress\n"
        "with Progress(10, 'x') as p:\n"
        "    c = p.chunk(10, 5); c(5)\n"
        "assert p.done == 10, p.done\n"
        "assert 'tqdm' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.PIPE, timeout=60)
