"""Whatever compress accepts, decompress restores (issue 19): bytes of a source file that are not
array data — trailing bytes of a ``.npy``, bytes after an ``.npz`` member's array, zip members
that are not arrays, a big safetensors header — become byte tensors when larger than
``layout.LITERAL_MAX``: coded in chunks like arrays, never inside the manifest."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lmgc_core.components import registry
from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.components.interfaces import Stage
from lmgc_core.files import filecodec
from lmgc_core.files.archive import MANIFEST
from lmgc_core.files.segments import LITERAL_MAX, InputFileError
from lmgc_core.util.bytes_layout import native
from tests.cli_helpers import lmgc
from tests.rss_helpers import run_lmgc

MAX_RSS_MB = 400
MAX_MANIFEST = 1 << 20


def _trailer(n: int, seed: int = 0) -> bytes:
    """``n`` bytes: some random, the rest a repeating pattern (so they compress)."""
    rng = np.random.default_rng(seed)
    head = rng.integers(0, 256, min(n, 20_000), dtype=np.uint8).tobytes()
    return head + (np.arange(n - len(head)) % 251).astype(np.uint8).tobytes()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _manifest(archive: Path) -> tuple[dict, int]:
    with zipfile.ZipFile(archive) as zf:
        text = zf.read(MANIFEST)
    return json.loads(text), len(text)


def _literals(segments: list) -> list[int]:
    """Sizes (base64 characters) of every literal segment, nested ones too."""
    out = []
    for seg in segments:
        if seg[0] == "literal":
            out.append(len(seg[1]))
        elif seg[0] == "deflated":
            out += _literals(seg[2])
    return out


def _round_trip(src: Path) -> dict:
    """Compress, check the manifest holds no large literal, decompress byte for byte."""
    lmgc("compress", src, "-q")
    manifest, size = _manifest(Path(f"{src}.lmgc"))
    assert size < MAX_MANIFEST
    assert max(_literals(manifest["segments"]), default=0) <= LITERAL_MAX * 4 // 3 + 4
    out = src.with_name("back" + src.suffix)
    result = lmgc("decompress", f"{src}.lmgc", "-o", out)
    assert "identical to the source" in result.stdout
    assert out.read_bytes() == src.read_bytes()
    return manifest


@pytest.fixture
def arr() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((40, 25)).astype(np.float32)


def test_npy_trailing_bytes_are_a_byte_tensor(tmp_path, arr):
    src = tmp_path / "t.npy"
    trailer = _trailer(300_000)
    src.write_bytes(_npy(arr) + trailer)
    manifest = _round_trip(src)
    (run,) = [t for t in manifest["tensors"] if t.get("bytes")]
    assert run["dtype"] == "|u1" and run["shape"] == [len(trailer)]
    assert [t.get("bytes", False) for t in manifest["tensors"]] == [False, True]
    # a conversion holds the arrays only
    lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        assert list(z) == ["arr_0"] and np.array_equal(z["arr_0"], arr)
    lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "c.raw", "--format", "raw")
    assert (tmp_path / "c.raw").read_bytes() == arr.tobytes()
    listing = lmgc("ls", f"{src}.lmgc").stdout
    row = next(ln.split() for ln in listing.splitlines() if ln.startswith("bytes@"))
    assert row[:3] == [f"bytes@{len(_npy(arr))}", "bytes", f"({len(trailer)},)"], listing


def test_small_trailing_bytes_stay_a_literal(tmp_path, arr):
    src = tmp_path / "t.npy"
    src.write_bytes(_npy(arr) + _trailer(1000))
    manifest = _round_trip(src)
    assert not any(t.get("bytes") for t in manifest["tensors"])
    assert len(manifest["segments"]) == 3


def _zip(path: Path, members: list[tuple[str, bytes, int]]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, method in members:
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=method)


def test_npz_members_with_trailing_bytes_and_non_array_members(tmp_path, arr):
    src = tmp_path / "odd.npz"
    stored, deflated = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
    _zip(
        src,
        [
            ("a.npy", _npy(arr) + _trailer(200_000, 2), stored),  # bytes after the array
            ("notes.bin", _trailer(100_000, 3), stored),  # not an array
            ("c.npy", _npy(arr * 2) + _trailer(150_000, 4), deflated),  # inside a deflated one
            ("blob.bin", np.random.default_rng(5).bytes(90_000), deflated),  # not an array
            ("small.txt", b"hello", stored),
        ],
    )
    manifest = _round_trip(src)
    runs = {t["nbytes"]: i for i, t in enumerate(manifest["tensors"]) if t.get("bytes")}
    assert len(runs) == 4 and {200_000, 100_000, 150_000} <= set(runs)
    (deflated_seg,) = [s for s in manifest["segments"] if s[0] == "deflated"]
    assert ["tensor", runs[150_000]] in deflated_seg[2]  # within the member, deflated again
    from safetensors.numpy import load_file

    lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "c.safetensors")
    got = load_file(str(tmp_path / "c.safetensors"))
    assert list(got) == ["a", "c"]
    assert np.array_equal(got["a"], arr) and np.array_equal(got["c"], arr * 2)
    lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "c.raw", "--format", "raw")
    assert (tmp_path / "c.raw").read_bytes() == arr.tobytes() + (arr * 2).tobytes()


def test_big_safetensors_header_and_gaps(tmp_path, arr):
    """A header of over 64 KiB (a big ``__metadata__``) and padding after the data."""
    meta = {"notes": "x" * 100_000}
    header = {"__metadata__": meta, "w": {"dtype": "F32", "shape": list(arr.shape),
                                          "data_offsets": [0, arr.nbytes]}}  # fmt: skip
    text = json.dumps(header).encode()
    src = tmp_path / "m.safetensors"
    src.write_bytes(struct.pack("<Q", len(text)) + text + arr.tobytes() + _trailer(80_000, 6))
    manifest = _round_trip(src)
    runs = sorted(t["nbytes"] for t in manifest["tensors"] if t.get("bytes"))
    assert runs == [80_000, 8 + len(text)]
    lmgc("decompress", f"{src}.lmgc", "-o", tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        assert list(z) == ["w"] and np.array_equal(z["w"], arr)


def test_a_manifest_the_reader_would_refuse_is_never_written():
    """The last guard: values or size over the reader's caps are refused when compressing."""
    with pytest.raises(InputFileError, match="too many tensors"):
        filecodec._check_manifest({"tensors": [0] * (3 << 20)}, [], "x.npz")
    filecodec._check_manifest({"tensors": [0] * 1000}, [], "x.npz")


def test_32_mb_of_trailing_bytes_in_bounded_memory(tmp_path, arr):
    """The issue's case, scaled: trailing bytes used to go through the manifest (base64 in
    memory, a manifest decompression refused). Now: chunks, in bounded memory, both ways."""
    src = tmp_path / "big.npy"
    with open(src, "wb") as f:
        f.write(_npy(arr))
        f.write(_trailer(1 << 20))
        f.truncate(f.tell() + (31 << 20))  # zeros, coded fast
    status, err, rss = run_lmgc("compress", src, "-q")
    print(f"compress: peak RSS {rss:.0f} MiB")
    assert status == 0, err
    assert rss < MAX_RSS_MB, f"compress peak RSS {rss:.0f} MiB"
    assert _manifest(Path(f"{src}.lmgc"))[1] < MAX_MANIFEST
    out = tmp_path / "back.npy"
    status, err, rss = run_lmgc("decompress", f"{src}.lmgc", "-o", out)
    print(f"decompress: peak RSS {rss:.0f} MiB")
    assert status == 0, err
    assert rss < MAX_RSS_MB, f"decompress peak RSS {rss:.0f} MiB"
    with open(src, "rb") as a, open(out, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            assert x == y
            if not x:
                break


class _ClearLowBit(Stage):
    """A lossy stage that, unlike the built-in ones, touches integer parts too."""

    name = "clear-low-bit"
    lossless = False

    def get_config(self) -> dict:
        return {}

    def forward(self, parts: dict) -> tuple[dict, dict]:
        out = {}
        for key, part in parts.items():
            values = native(part)
            bits = values.view(f"u{values.dtype.itemsize}")
            out[key] = (bits & ~np.array(1, bits.dtype)).view(values.dtype)
        return out, {}

    def inverse(self, parts: dict, state: dict) -> dict:
        return parts


class _StagePlugin:
    @hookimpl
    def register_stages(self, register):
        register("clear-low-bit", _ClearLowBit)


@pytest.fixture
def lossy_stage():
    plugin = _StagePlugin()
    registry.add_plugin(plugin, label="trailing-test 0.0")
    yield "clear-low-bit"
    registry.remove_plugin(plugin)


def test_byte_tensors_stay_exact_under_lossy_stages(tmp_path, arr, lossy_stage):
    """The array goes through the stages; the file's other bytes (here trailing bytes, in an
    .npz the zip records) must not, or the rebuilt file would not even be valid."""
    src = tmp_path / "t.npy"
    header, trailer = _npy(arr)[: -arr.nbytes], _trailer(100_000, 7)
    src.write_bytes(header + arr.tobytes() + trailer)
    lmgc("compress", src, "-q", "--stage", lossy_stage)
    out = tmp_path / "back.npy"
    lmgc("decompress", f"{src}.lmgc", "-o", out)
    got = out.read_bytes()
    assert got[len(header) + arr.nbytes :] == trailer
    lossy = (arr.view(np.uint32) & ~np.uint32(1)).view(np.float32)
    assert got[: len(header) + arr.nbytes] == header + lossy.tobytes()
