"""Which decompressions hash the rebuilt file: only a rebuild that is checked against the
source's SHA-256 (a zip archive of an identical source). A compact archive's bytes all come
through its stream's own checks, and a conversion has no source hash to meet, so hashing them
would only cost time on the decoding's serial thread."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc_core.files import writers
from lmgc_core.files.folders import compress_path, decompress_path
from lmgc_core.util.errors import ChecksumError


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
    monkeypatch.setattr(writers.hashlib, "sha256", _NoHash)
    assert decompress_path(tmp_path / "one.npy.lmgc", tmp_path / "one_back.npy")
    assert (tmp_path / "one_back.npy").read_bytes() == one.read_bytes()
    with pytest.raises(AssertionError, match="hashed"):
        decompress_path(tmp_path / "several.npz.lmgc", tmp_path / "several_back.npz")


def test_a_zip_rebuild_still_meets_the_source_sha256(tmp_path, grads, monkeypatch):
    several = tmp_path / "several.npz"
    np.savez(several, a=grads[:4096], b=grads[4096:])
    compress_path(several, tmp_path / "s.lmgc")
    assert decompress_path(tmp_path / "s.lmgc", tmp_path / "back.npz")
    assert (tmp_path / "back.npz").read_bytes() == several.read_bytes()

    class _WrongHash:
        def __init__(self) -> None:
            self.inner = writers.hashlib.new("sha256")

        def update(self, data: object) -> None:
            self.inner.update(data)

        def hexdigest(self) -> str:
            return "0" * 64

    monkeypatch.setattr(writers.hashlib, "sha256", _WrongHash)
    with pytest.raises(ChecksumError, match="SHA-256"):
        decompress_path(tmp_path / "s.lmgc", tmp_path / "back2.npz")
