"""The base file of ``lmgc compress NEW --base OLD``: the archive records OLD's SHA-256 and
XXH3-128, and decoding checks the XXH3-128 where the record has one (~7x faster: a 1 GB base
took a second of SHA-256 before any tensor was decoded), the SHA-256 in archives made before
it; the refusal names the hash it compared. Real safetensors files on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xxhash
from safetensors.numpy import save_file

from lmgc_core.files.base_file import BaseFile, check_record
from lmgc_core.util.errors import ConfigError
from tests.paths import TESTS_DIR

GRADS = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy")


def _base(tmp_path: Path) -> Path:
    path = tmp_path / "step1.safetensors"
    save_file({"w": GRADS.reshape(64, 128), "b": GRADS[:64].copy()}, str(path))
    return path


def test_the_record_has_both_hashes_of_the_whole_file(tmp_path):
    path = _base(tmp_path)
    data = path.read_bytes()
    with open(path, "rb") as f:
        record = BaseFile(f, str(path)).record
    assert record["size"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["xxh3_128"] == xxhash.xxh3_128_hexdigest(data)


def test_decoding_checks_the_xxh3_128_where_recorded(tmp_path):
    """With an XXH3-128 in the record only that hash is computed and compared: a record whose
    XXH3-128 names another file refuses this one (even with its SHA-256 right), naming it."""
    path = _base(tmp_path)
    with open(path, "rb") as f:
        record = dict(BaseFile(f, str(path)).record)
    with open(path, "rb") as f:
        checked = BaseFile(f, str(path), expect=(record, "new.lmgc"))
    assert "xxh3_128" in checked.record and "sha256" not in checked.record
    other = dict(record, xxh3_128="0" * 32)
    with open(path, "rb") as f, pytest.raises(ConfigError, match="XXH3-128 " + record["xxh3_128"]):
        BaseFile(f, str(path), expect=(other, "new.lmgc"))


def test_an_older_record_is_checked_by_its_sha256(tmp_path):
    path = _base(tmp_path)
    with open(path, "rb") as f:
        record = dict(BaseFile(f, str(path)).record)
    old = {k: v for k, v in record.items() if k != "xxh3_128"}
    with open(path, "rb") as f:
        assert "sha256" in BaseFile(f, str(path), expect=(old, "new.lmgc")).record
    changed = tmp_path / "changed.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    changed.write_bytes(bytes(data))
    with open(changed, "rb") as f, pytest.raises(ConfigError, match="SHA-256 "):
        BaseFile(f, str(changed), expect=(old, "new.lmgc"))
    with pytest.raises(ConfigError, match="give it with --base"):
        check_record(old, None, "new.lmgc")
