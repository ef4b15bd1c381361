"""Archive members read on the decoding threads (issue 20: ``-j 2`` scaling): the caller reads a
member's stream header alone to check it and pick the pipeline, the decoding thread reads the
member whole and checks its zip CRC-32. These tests hold the checks to what they were when the
caller read every member whole: a damaged header or body is still named as the member's zip
CRC-32 mismatch, a member whose header changed between the two reads is refused, and nothing is
written in either case."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from lmgc_core.files import archive
from lmgc_core.files.archive import ArchiveReader
from lmgc_core.util.errors import StreamError
from tests.cli_helpers import lmgc, one_error_line


@pytest.fixture
def chunked(tmp_path: Path) -> tuple[Path, Path]:
    """A ``.npy`` of 4 chunks and its archive (4 stream members + the manifest)."""
    rng = np.random.default_rng(7)
    grads = (rng.standard_normal((64, 128)) * 1e-3).astype(np.float32)
    src = tmp_path / "g.npy"
    np.save(src, grads)
    lmgc("compress", "-q", src, "--chunk-size", str(grads.nbytes // 4))
    return src, tmp_path / "g.npy.lmgc"


def _member_offsets(path: Path) -> list[tuple[str, int, int]]:
    """``(name, data offset, header length)`` of the stream members."""
    with open(path, "rb") as f:
        reader = ArchiveReader(f, str(path))
        names = [m for e in reader.entries for m in e.members]
        out = []
        for name in names:
            m = reader._members[name]
            (_, end), _ = reader.read_head(name)
            out.append((name, m.data_offset, end))
    return out


def _flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["header", "body"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_damaged_member_is_a_zip_crc_error(chunked, tmp_path, where, jobs):
    _, arc = chunked
    name, offset, head_len = _member_offsets(arc)[2]
    _flip(arc, offset + (12 if where == "header" else head_len + 5))
    out = tmp_path / "back.npy"
    result = lmgc("decompress", "-q", "-j", jobs, arc, "-o", out, ok=False)
    line = one_error_line(result, 1)
    assert "zip CRC-32 mismatch" in line and name in line, line
    assert not out.exists() and not list(tmp_path.glob(".back.npy.*"))


def test_members_are_read_on_the_decoding_threads(chunked, tmp_path, monkeypatch):
    src, arc = chunked
    threads: list[str] = []
    read = ArchiveReader.read_member

    def spy(self, name):
        threads.append(threading.current_thread().name)
        return read(self, name)

    monkeypatch.setattr(ArchiveReader, "read_member", spy)
    lmgc("decompress", "-q", "-j", "2", arc, "-o", tmp_path / "back.npy")
    assert (tmp_path / "back.npy").read_bytes() == src.read_bytes()
    assert len(threads) == 4 and threading.main_thread().name not in threads, threads


def test_a_header_that_changed_between_reads_is_refused(chunked, tmp_path, monkeypatch):
    """The header the caller checked must be the one at the head of the member it decodes."""
    _, arc = chunked
    read = ArchiveReader.read_member

    def changed(self, name):
        blob = bytearray(read(self, name))
        blob[12] ^= 0x10  # inside the (already parsed) header; the blocks are intact
        return bytes(blob)

    monkeypatch.setattr(ArchiveReader, "read_member", changed)
    out = tmp_path / "back.npy"
    line = one_error_line(lmgc("decompress", "-q", arc, "-o", out, ok=False), 1)
    assert "changed while it was read" in line, line
    assert not out.exists()


def test_the_prior_crc32_checks_the_zip_crc(chunked, tmp_path, monkeypatch):
    """Members are CRC-checked with the decoding prior's ``block_crc32`` where it has one (zlib's
    values, faster): a wrong one is caught there, as the member's zip CRC-32 mismatch."""
    from lmgc_float.prior import FloatPrior

    _, arc = chunked
    monkeypatch.setattr(FloatPrior, "block_crc32", property(lambda self: lambda data: 0))
    line = one_error_line(lmgc("decompress", "-q", arc, "-o", tmp_path / "b.npy", ok=False), 1)
    assert "zip CRC-32 mismatch" in line, line


def test_positional_reads_without_a_descriptor(chunked):
    """A reader over a file object without a descriptor reads under its lock, same bytes."""
    import io

    _, arc = chunked
    with open(arc, "rb") as f:
        by_fd = ArchiveReader(f, "a")
        want = [by_fd.read_member(m) for e in by_fd.entries for m in e.members]
    mem = ArchiveReader(io.BytesIO(arc.read_bytes()), "b")
    assert mem._fd is None
    assert [mem.read_member(m) for e in mem.entries for m in e.members] == want
    with pytest.raises(StreamError, match="missing"):
        mem.read_member(archive.MANIFEST)


# -- decoding ahead across tensors -----------------------------------------------------------------


@pytest.fixture
def many(tmp_path: Path) -> tuple[Path, Path]:
    """A .npz of three arrays, two of them in 2-3 chunks, and its archive."""
    rng = np.random.default_rng(11)
    arrays = {
        "a": (rng.standard_normal((48, 64)) * 1e-2).astype(np.float32),
        "b": np.arange(100, dtype=np.int16),
        "c": (rng.standard_normal((40, 64)) * 1e-3).astype(np.float32),
    }
    src = tmp_path / "m.npz"
    np.savez(src, **arrays)
    lmgc("compress", "-q", src, "--chunk-size", "4096")
    return src, tmp_path / "m.npz.lmgc"


def _decoder(f, jobs: int = 2):
    from lmgc_core.files.filecodec import ArchiveDecoder, StreamDecoder

    reader = ArchiveReader(f, "m")
    return reader, ArchiveDecoder(reader, StreamDecoder(jobs=jobs))


def _whole(dec, index: int) -> bytes:
    return b"".join(np.ascontiguousarray(a).tobytes() for a in dec.chunks(index))


def test_one_run_ahead_for_the_whole_file(many, tmp_path, monkeypatch):
    """A rebuild decodes every member of every tensor in one run of threads (the next tensor's
    members decode while one is written), not one run per tensor."""
    from lmgc_core.files import filecodec

    src, arc = many
    runs = []
    real = filecodec.run_ahead

    def counted(*args, **kw):
        runs.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(filecodec, "run_ahead", counted)
    for jobs in ("1", "2"):
        out = tmp_path / f"back{jobs}.npz"
        lmgc("decompress", "-q", "-j", jobs, arc, "-o", out)
        assert out.read_bytes() == src.read_bytes()
    assert len(runs) == 2, runs  # one per decompress, three tensors each


def test_tensors_asked_out_of_plan_or_left_unfinished(many):
    """The plan is a hint: a tensor asked out of order, or one left half-read, ends it, and
    every tensor still comes back whole and right."""
    src, arc = many
    with np.load(src) as z:
        want = [np.ascontiguousarray(z[k]).tobytes() for k in ("a", "b", "c")]
    with open(arc, "rb") as f:
        reader, dec = _decoder(f)
        names = [e.name for e in reader.entries]
        assert names == ["a", "b", "c"] and len(reader.entries[0].members) > 1
        dec.plan([0, 1, 2])
        assert _whole(dec, 1) == want[1]  # out of plan
        assert _whole(dec, 0) == want[0]
        dec.plan([0, 1, 2])
        part = dec.chunks(0)
        next(part)
        part.close()  # tensor 0 left after its first chunk
        assert _whole(dec, 1) == want[1] and _whole(dec, 2) == want[2]
        assert _whole(dec, 0) == want[0]
        dec.close()
