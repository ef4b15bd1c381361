"""``join_bytes`` gives ``b"".join``'s bytes on any number of threads, wherever the range
boundaries fall (inside a piece, on its edges, across empty pieces), and a stream packed on two
threads is the one packed on one. The speed-up is measured by ``benchmarks/cli_big.py memory``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmgc_core.coding.pipeline import Pipeline, decompress
from lmgc_core.util import join
from tests.conftest import same_bits


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads for a few bytes each, so small pieces take the parallel path."""
    monkeypatch.setattr(join, "PARALLEL_JOIN_BYTES", 2)


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=40), max_size=12),
    jobs=st.integers(1, 5),
    kinds=st.lists(st.sampled_from(["bytes", "bytearray", "memoryview", "array"]), min_size=12),
)
def test_the_same_bytes_as_join(pieces: list[bytes], jobs: int, kinds: list[str]) -> None:
    saved = join.PARALLEL_JOIN_BYTES
    join.PARALLEL_JOIN_BYTES = 2  # (a fixture would not reset per example)
    try:
        given_as = [_as(kind, p) for kind, p in zip(kinds, pieces, strict=False)]
        out = join.join_bytes(given_as, jobs)
    finally:
        join.PARALLEL_JOIN_BYTES = saved
    assert type(out) is bytes
    assert out == b"".join(given_as)


def _as(kind: str, piece: bytes) -> object:
    if kind == "bytearray":
        return bytearray(piece)
    if kind == "memoryview":
        return memoryview(piece)
    if kind == "array":  # a buffer of wider items (its whole ones): joined by its bytes
        return np.frombuffer(piece[: len(piece) // 4 * 4], np.uint32)
    return piece


def test_took_the_threads(small_ranges: None) -> None:
    """The parallel path really ran (a fresh object, not a shared singleton or a piece)."""
    piece = bytes(range(256)) * 40
    out = join.join_bytes([piece, b"", piece[:7]], 3)
    assert out == piece + piece[:7] and out is not piece


def test_stream_packed_on_threads(small_ranges: None) -> None:
    rng = np.random.default_rng(5)
    data = rng.standard_normal((64, 300)).astype(np.float32)
    pipe = Pipeline.from_config({"prior": {"name": "float", "level": 1}})
    one, two = pipe.compress(data, jobs=1), pipe.compress(data, jobs=2)
    assert one == two
    assert same_bits(decompress(two, jobs=2), data)


_INTERRUPTED_JOIN = """
import os, signal, sys, threading, time
import numpy as np
from lmgc_core.util import join, parallel

pieces = [np.full(1 << 20, 1 + i % 250, np.uint8).tobytes() for i in range(16)]
real = parallel.map_ordered

def late_worker(fn, items, jobs=1):  # the helper thread descheduled; Ctrl-C while it waits
    def slow(w):
        if w == 1:
            time.sleep(0.3)
        else:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        return fn(w)
    return real(slow, items, jobs)

join.map_ordered = late_worker
try:
    join.join_bytes(pieces, jobs=2)
except KeyboardInterrupt:
    print("interrupted", [t.name for t in threading.enumerate() if t.name == "lmgc-map"])
junk = np.zeros(16 << 20, np.uint8)  # memory the freed output may have been
time.sleep(0.5)
print("changed", int(np.count_nonzero(junk)))
"""


def test_ctrl_c_returns_only_once_the_threads_stopped_writing() -> None:
    """Ctrl-C while the caller waited left a thread copying into the output the unwinding
    freed: other arrays changed (32 MB of a fresh np.zeros), or a segfault. Run apart: a real
    SIGINT."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_JOIN], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["interrupted []", "changed 0"], done.stdout
