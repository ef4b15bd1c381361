"""The compact form of a single-array file (issue 20, small inputs; ``lmgc_core/files/compact.py``):
a ``.npy`` or raw file whose one array fits one chunk is written as one stream whose header's
``file`` record rebuilds the source, instead of a zip with a manifest (~600 bytes more). It must
cost little over its coded blocks, come back byte for byte, and refuse a bad record."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc_core.stream import container
from tests.cli_helpers import lmgc, one_error_line
from tests.paths import TESTS_DIR

GRADS = TESTS_DIR / "data" / "mlp_grads_8k.npy"


@pytest.fixture
def grads() -> np.ndarray:
    return np.load(GRADS)[:512].astype(np.float32)


def _coded(blob: bytes) -> int:
    return sum(len(b) for b in container.unpack(blob).blocks)


@pytest.mark.parametrize("level", ["1", "2"])
def test_a_small_npy_costs_little_over_its_coded_blocks(tmp_path, grads, level):
    src = tmp_path / "g.npy"
    np.save(src, grads)  # 2,048 bytes of gradients, 2,176 with the .npy header
    lmgc("compress", src, "-q", "-l", level)
    blob = (tmp_path / "g.npy.lmgc").read_bytes()
    assert blob[:4] == container.MAGIC and container.read_header(blob)[0]["file"]["format"] == "npy"
    overhead = len(blob) - _coded(blob)  # prefix, header with the file record, CRC
    # ~70 bytes, ~130 when the header holds the array's SHA-256 in hex; a zip + manifest: ~700
    assert overhead <= 130, overhead
    assert len(blob) < src.stat().st_size
    lmgc("decompress", tmp_path / "g.npy.lmgc", "-o", tmp_path / "back.npy", "-q")
    assert (tmp_path / "back.npy").read_bytes() == src.read_bytes()


def test_fortran_views_and_raw_come_back_byte_for_byte(tmp_path, grads):
    sources = {
        "f.npy": lambda p: np.save(p, np.asfortranarray(grads.reshape(16, 32))),
        "c.npy": lambda p: np.save(p, grads.view(np.complex64)),  # a noted view
        "e.npy": lambda p: np.save(p, grads[:0]),
        "r.bin": lambda p: p.write_bytes(grads.tobytes()),
    }
    for name, save in sources.items():
        src = tmp_path / name
        save(src)
        lmgc("compress", src, "-q", *(["--dtype", "float32"] if name == "r.bin" else []))
        blob = (tmp_path / f"{name}.lmgc").read_bytes()
        assert blob[:4] == container.MAGIC, name
        lmgc("decompress", tmp_path / f"{name}.lmgc", "-o", tmp_path / f"back-{name}", "-q")
        assert (tmp_path / f"back-{name}").read_bytes() == src.read_bytes(), name
    lmgc("decompress", tmp_path / "f.npy.lmgc", "-o", tmp_path / "f.npz", "-q")  # converts
    with np.load(tmp_path / "f.npz") as z:
        assert z["arr_0"].tobytes(order="A") == np.load(tmp_path / "f.npy").tobytes(order="A")


def test_what_needs_more_than_one_stream_stays_a_zip(tmp_path, grads):
    np.save(tmp_path / "g.npy", grads)
    with open(tmp_path / "t.npy", "wb") as f:  # trailing bytes after the array
        f.write((tmp_path / "g.npy").read_bytes() + b"tail")
    runs = {
        "chunks": ("g.npy", "--chunk-size", "1024"),
        "lossy": ("g.npy", "--stage", "quantize:bits=8"),
        "trailing": ("t.npy",),
    }
    for what, (name, *args) in runs.items():
        out = tmp_path / f"{what}.lmgc"
        lmgc("compress", tmp_path / name, "-o", out, "-q", *args)
        assert out.read_bytes()[:4] == b"PK\x03\x04", what


def _with_record(blob: bytes, record: object) -> bytes:
    header, offset = container.read_header(blob)
    return container.pack({**header, "file": record}, []) + blob[offset:]


def test_a_bad_file_record_is_refused(tmp_path, grads):
    np.save(tmp_path / "g.npy", grads)
    lmgc("compress", tmp_path / "g.npy", "-q")
    blob = (tmp_path / "g.npy.lmgc").read_bytes()
    head = container.read_header(blob)[0]["file"]["head"]
    other = head.replace("(512,)", "(513,)")
    bad = {
        "not an object": ["npy"],
        "extra key": {"format": "npy", "head": head, "name": "g.npy"},
        "unknown format": {"format": "npz", "head": head},
        "raw with a head": {"format": "raw", "head": head},
        "not a .npy header": {"format": "npy", "head": "hello"},
        "not bytes": {"format": "npy", "head": head.replace("descr", "d\u0100scr")},
        "bytes after it": {"format": "npy", "head": head + " "},
        "another array": {"format": "npy", "head": other},
    }
    for what, record in bad.items():
        path = tmp_path / "bad.lmgc"
        path.write_bytes(_with_record(blob, record))
        for command in (["decompress", path, "-o", tmp_path / "x.npy", "-f"], ["ls", path]):
            message = one_error_line(lmgc(*command, ok=False), 1)
            assert "file record" in message or "declares" in message, (what, message)
        assert not (tmp_path / "x.npy").exists(), what
