"""``lmgc decompress --test`` (decode through every check, write nothing, as ``gzip -t``) and
``lmgc compress --verify`` (the same test of each output before it is kept): real files, the real
coder; an encoder made to code other values than its input stands for a prior whose encoder does
not compute what its decoder computes (a non-deterministic plugin)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from lmgc_float.prior import FloatPrior

from tests.cli.test_cli_series import sgd_checkpoints, write
from tests.cli_helpers import lmgc, one_error_line


def _listing(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return write(tmp_path / "step0.npz", sgd_checkpoints(1)[0], "npz")


@pytest.fixture
def off_by_one_bit(monkeypatch):
    """Every float part is coded with its first value's lowest bit flipped: the stream is
    well formed, its own block checksums agree with what it holds, and it is not the source."""
    original = FloatPrior.encode_array

    def encode_array(self, data, shape, jobs=1):
        data = np.array(data).reshape(-1)  # a copy: the caller's array stays as it is
        bits = data.view(f"u{data.dtype.itemsize}")
        bits[0] ^= 1
        return original(self, data, shape, jobs)

    monkeypatch.setattr(FloatPrior, "encode_array", encode_array)


def test_verify_and_test_pass_good_archives_and_test_writes_nothing(tmp_path, checkpoint):
    out = lmgc("compress", "--verify", checkpoint).stdout
    assert "(verified: identical to the source, XXH3-128 verified)" in out
    before = _listing(tmp_path)
    result = lmgc("decompress", "--test", f"{checkpoint}.lmgc")
    assert result.stdout.strip() == (
        f"{checkpoint}.lmgc: OK (identical to the source, XXH3-128 verified)"
    )
    assert _listing(tmp_path) == before  # nothing written, not even a hidden file

    array = tmp_path / "one.npy"
    np.save(array, np.linspace(-1, 1, 5000, dtype=np.float32))
    lmgc("compress", "--verify", array, "-o", "-")  # the spooled output is tested too
    lmgc("compress", "--verify", array)
    assert "OK (identical to the source" in lmgc("decompress", "-t", f"{array}.lmgc").stdout


def test_verify_keeps_nothing_when_the_output_does_not_decode(tmp_path, checkpoint, off_by_one_bit):
    archive = Path(f"{checkpoint}.lmgc")
    line = one_error_line(lmgc("compress", "--verify", checkpoint, ok=False), 1)
    assert "the archive just written does not decode to its source, so it is not kept" in line
    assert sorted(_listing(tmp_path)) == ["step0.npz"]  # no archive, no temporary file

    archive.write_bytes(b"an older archive")
    one_error_line(lmgc("compress", "--verify", "-f", checkpoint, ok=False), 1)
    assert archive.read_bytes() == b"an older archive"  # --force replaced nothing

    lmgc("compress", "-f", checkpoint)  # unverified, the same encoder writes it, exit 0
    line = one_error_line(lmgc("decompress", "--test", archive, ok=False), 1)
    assert "XXH3-128" in line  # what --test finds: the rebuilt file is not the source


def test_verify_of_a_folder_says_it_is_left_as_written(tmp_path, checkpoint, off_by_one_bit):
    model = tmp_path / "model"
    model.mkdir()
    checkpoint.rename(model / "weights.npz")
    (model / "config.json").write_text('{"layers": 2}')
    line = one_error_line(lmgc("compress", "--verify", model, "-o", tmp_path / "out", ok=False), 1)
    assert "the folder just written does not decode to its sources" in line
    assert f"do not delete {model}" in line
    line = one_error_line(lmgc("decompress", "--test", tmp_path / "out", ok=False), 1)
    assert "weights.npz" in line


def test_test_of_a_good_folder_checks_its_copies(tmp_path, checkpoint):
    model = tmp_path / "model"
    model.mkdir()
    checkpoint.rename(model / "weights.npz")
    (model / "config.json").write_text('{"layers": 2}')
    out = lmgc("compress", "--verify", model, "-o", tmp_path / "out").stdout
    assert "decoded again and verified" in out
    before = _listing(tmp_path)
    result = lmgc("decompress", "--test", tmp_path / "out")
    said = "OK (identical to their sources, hashes verified: 1 decoded files; copies checked: 1)"
    assert said in result.stdout
    assert _listing(tmp_path) == before
    (tmp_path / "out" / "config.json").write_text('{"layers": 3}')  # a changed copy
    line = one_error_line(lmgc("decompress", "--test", tmp_path / "out", ok=False), 1)
    assert "not the file compress copied" in line


def test_test_of_a_damaged_archive_fails(tmp_path, checkpoint):
    lmgc("compress", checkpoint)
    archive = Path(f"{checkpoint}.lmgc")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    one_error_line(lmgc("decompress", "--test", archive, ok=False), 1)


def test_test_writes_nothing_so_takes_no_output(tmp_path, checkpoint):
    lmgc("compress", checkpoint)
    for extra in (["-o", str(tmp_path / "x.npz")], ["--format", "npy"]):
        result = lmgc("decompress", "--test", f"{checkpoint}.lmgc", *extra, ok=False)
        line = one_error_line(result, 2)
        assert "--test writes nothing" in line


def test_test_of_a_series_needs_the_earlier_checkpoint_on_disk(tmp_path):
    files = [write(tmp_path / f"s{i}.npz", t, "npz") for i, t in enumerate(sgd_checkpoints(2))]
    lmgc("compress", "--series", "--verify", *files)
    archives = [f"{f}.lmgc" for f in files]
    assert lmgc("decompress", "--test", *archives).stdout.count(": OK (identical") == 2
    files[0].rename(tmp_path / "elsewhere.npz")
    line = one_error_line(lmgc("decompress", "--test", *archives, ok=False), 2)
    assert "which --test does not write" in line
    out = lmgc("decompress", "--test", archives[1], "--base", tmp_path / "elsewhere.npz").stdout
    assert ": OK (identical to the source" in out
