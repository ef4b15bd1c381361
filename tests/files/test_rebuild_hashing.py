"""Which decompressions hash the rebuilt file: only a rebuild that is checked against the
source's hash (a zip archive of an identical source): its XXH3-128 where the archive records one,
else (archives made before) its SHA-256. A compact archive's bytes all come through its stream's
own checks, and a conversion has no source hash to meet, so hashing them would only cost time on
the decoding's serial thread."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc_core.files import writers
from lmgc_core.files.folders import compress_path, decompress_path
from lmgc_core.util.errors import ChecksumError
from tests.paths import TESTS_DIR

OLD_ZIP = TESTS_DIR / "fixtures" / "archive-v3-stream-v5" / "npz-stored.lmgc"
"""A zip archive from before XXH3-128 was recorded: its source has only a SHA-256."""


class _Sha256:
    """hashlib's SHA-256 behind the same three calls, for the stand-ins below to change one."""

    def __init__(self) -> None:
        self.inner = writers.hashlib.new("sha256")

    def update(self, data: object) -> None:
        self.inner.update(data)

    def hexdigest(self) -> str:
        return self.inner.hexdigest()


class _WrongHash(_Sha256):
    """A SHA-256 that hashes but reports a wrong digest: the rebuilt file must be refused."""

    def hexdigest(self) -> str:
        return "0" * 64


class _WrongXxh3:
    """An XXH3-128 that reports a wrong digest."""

    def update(self, data: object) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 32


class _NoHash:
    def __init__(self, *args: object) -> None:
        raise AssertionError("the rebuilt file was hashed")


def test_a_compact_file_is_not_hashed_but_a_zip_rebuild_is(tmp_path, grads, monkeypatch):
    one = tmp_path / "one.npy"
    np.save(one, grads)
    several = tmp_path / "several.npz"
    np.savez(several, a=grads[:4096], b=grads[4096:])
    for src in (one, several):
        compress_path(src, tmp_path / f"{src.name}.lmgc")
    monkeypatch.setitem(writers.HASHERS, "sha256", _NoHash)
    monkeypatch.setitem(writers.HASHERS, "xxh3_128", _NoHash)
    assert decompress_path(tmp_path / "one.npy.lmgc", tmp_path / "one_back.npy")
    assert (tmp_path / "one_back.npy").read_bytes() == one.read_bytes()
    with pytest.raises(AssertionError, match="hashed"):
        decompress_path(tmp_path / "several.npz.lmgc", tmp_path / "several_back.npz")


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_source_hash_is_checked_on_one_thread_or_beside_the_writes(
    tmp_path, grads, monkeypatch, jobs
):
    """A zip rebuild still meets the source's hash (XXH3-128, recorded since SHA-256 took half
    of a level-1 decompress); with ``jobs > 1`` the rebuilt file is hashed on a thread of its
    own, still in file order and still checked: a wrong digest is refused either way."""
    several = tmp_path / "several.npz"
    np.savez(several, a=grads[:4096], b=grads[4096:])
    compress_path(several, tmp_path / "s.lmgc")
    started: list[object] = []
    real = writers._HashThread

    def counted(new: object) -> object:
        started.append(real(new))
        return started[-1]

    monkeypatch.setattr(writers, "_HashThread", counted)
    assert decompress_path(tmp_path / "s.lmgc", tmp_path / "back.npz", jobs=jobs)
    assert (tmp_path / "back.npz").read_bytes() == several.read_bytes()
    assert len(started) == (1 if jobs > 1 else 0)

    monkeypatch.setitem(writers.HASHERS, "sha256", _NoHash)  # XXH3-128 alone checks it
    monkeypatch.setitem(writers.HASHERS, "xxh3_128", _WrongXxh3)
    with pytest.raises(ChecksumError, match="XXH3-128"):
        decompress_path(tmp_path / "s.lmgc", tmp_path / "back2.npz", jobs=jobs)


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_archive_without_xxh3_is_checked_against_its_sha256(tmp_path, monkeypatch, jobs):
    monkeypatch.setitem(writers.HASHERS, "xxh3_128", _NoHash)
    assert decompress_path(OLD_ZIP, tmp_path / "back.npz", jobs=jobs)
    monkeypatch.setitem(writers.HASHERS, "sha256", _WrongHash)
    with pytest.raises(ChecksumError, match="SHA-256"):
        decompress_path(OLD_ZIP, tmp_path / "back2.npz", jobs=jobs)


def test_writes_wait_for_a_slower_background_hash(monkeypatch):
    """At most HASH_AHEAD writes (each holding its chunk) wait for the hashing thread, so a
    hash slower than the writes bounds memory instead of queueing the whole file."""
    import io
    import threading

    release = threading.Event()

    class _Slow(_Sha256):
        def update(self, data: object) -> None:
            release.wait()
            super().update(data)

    monkeypatch.setitem(writers.HASHERS, "sha256", _Slow)
    sink = writers.HashingWriter(io.BytesIO(), background=True)
    chunks = [bytes([k]) * 1024 for k in range(writers.HASH_AHEAD + 3)]
    writer = threading.Thread(target=lambda: [sink.write(c) for c in chunks])
    writer.start()
    writer.join(timeout=1.0)
    assert writer.is_alive(), "every write went through while the hash was stuck"
    release.set()
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert sink.hexdigest() == writers.hashlib.new("sha256", b"".join(chunks)).hexdigest()
