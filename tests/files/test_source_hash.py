"""The source file's SHA-256 on a thread of its own: the right digest, no thread without a spare
core, and a cancel that lets go of the file at once instead of hashing the rest."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import numpy as np
import pytest

from lmgc_core.files import source_hash
from lmgc_core.files.source_hash import FileHash, HashCancelled

BLOCK = 1 << 16


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(source_hash, "BLOCK", BLOCK)


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * (40 * BLOCK // 256) + b"tail"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("jobs", [1, 2])
def test_digest_of_the_whole_file_whatever_the_position(big_file, jobs):
    path, want = big_file
    with open(path, "rb") as f:
        f.seek(12345)
        with FileHash(f, jobs) as h:
            assert (h._thread is not None) is (jobs > 1)
            assert h.result() == want
        assert f.tell() == 12345  # positional reads leave the caller's position alone


def test_a_file_without_a_descriptor_is_hashed_when_asked():
    data = b"x" * (3 * BLOCK + 7)
    with FileHash(io.BytesIO(data), 2) as h:
        assert h._thread is None
        assert h.result() == hashlib.sha256(data).hexdigest()


def test_cancel_stops_at_the_next_block(big_file, monkeypatch):
    """An error or Ctrl-C in the caller cancels the hash: its thread lets go of the file after
    the block it is reading, instead of hashing the other 40 blocks."""
    path, _ = big_file
    calls, first = [], threading.Event()
    real_preadv = source_hash.os.preadv

    def slow_preadv(fd, buffers, pos):
        calls.append(pos)
        first.set()
        time.sleep(0.05)  # the whole file would take 2 s
        return real_preadv(fd, buffers, pos)

    monkeypatch.setattr(source_hash.os, "preadv", slow_preadv)
    with open(path, "rb") as f:
        h = FileHash(f, 2)
        assert first.wait(10)
        h.cancel()
        assert not h._thread.is_alive()
        assert len(calls) <= 2  # the block being read, at most one more
        with pytest.raises(HashCancelled):
            h.result()


def test_an_error_in_the_hash_reaches_the_caller(big_file, monkeypatch):
    path, _ = big_file
    real_preadv = source_hash.os.preadv

    def failing_preadv(fd, buffers, pos):
        if pos > 0:
            raise OSError(5, "Input/output error")
        return real_preadv(fd, buffers, pos)

    monkeypatch.setattr(source_hash.os, "preadv", failing_preadv)
    with open(path, "rb") as f, FileHash(f, 2) as h, pytest.raises(OSError, match="Input/output"):
        h.result()


def test_a_write_before_the_coding_starts_is_caught(tmp_path, monkeypatch):
    """The file's state for the 'changed while compressed' check was taken after the imports,
    the scan and a model's load, while its hash had started at once: a write in that window
    gave exit 0 and an archive whose rebuilt file failed its hash."""
    import time

    from lmgc_core.files import readers
    from tests.cli_helpers import lmgc, one_error_line

    path = tmp_path / "a.npy"
    np.save(path, np.random.default_rng(0).standard_normal(400_000).astype(np.float32))
    scan = readers.scan

    def scan_after_a_write(src, *args, **kwargs):
        time.sleep(0.3)  # the hash thread has read the file by now
        with open(path, "r+b") as f:
            f.seek(800_000)
            f.write(b"\x00\x00\x80\x3f" * 16)
        return scan(src, *args, **kwargs)

    monkeypatch.setattr(readers, "scan", scan_after_a_write)
    result = lmgc("compress", path, "--chunk-size", "262144", "-j", "2", ok=False)
    assert "the file changed while it was being compressed" in one_error_line(result, 1)
    assert not (tmp_path / "a.npy.lmgc").exists()
