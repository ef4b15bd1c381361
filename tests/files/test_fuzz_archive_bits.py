"""Every single-bit flip of an archive's zip structure (issue 19): the central directory, the end
record and every local header, plus a sample of member data bits, for one small archive of each
source format (one cut in chunks) and a zip without a manifest. Each mutated archive is
decompressed the way ``lmgc decompress`` does it (in process, through the library) and must give
either the original file byte for byte or an ``LMGCError``: zero silent wrong outputs."""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lmgc_core.cli.commands import _output_format
from lmgc_core.files.archive import ArchiveReader
from lmgc_core.files.filecodec import ArchiveDecoder, StreamDecoder, decompress_archive
from lmgc_core.stream import container
from lmgc_core.util.errors import LMGCError
from tests.cli_helpers import lmgc
from tests.files.old_streams import old_stream

DATA_BITS = 64
"""Member data bits flipped per archive (the stream and zip CRCs cover these)."""


def structure_offsets(blob: bytes) -> tuple[list[int], list[int]]:
    """Byte offsets of the zip's structure (local headers with their names, the central
    directory, the end record), and of the member data. A single-array file in the compact form
    (one stream, no zip): its header (prefix, deflated JSON with the ``file`` record, CRC) is the
    structure, its blocks the data."""
    if blob[:4] == container.MAGIC:
        offset = container.read_header(blob)[1]
        return list(range(offset)), list(range(offset, len(blob)))
    (cd_offset,) = struct.unpack_from("<I", blob, len(blob) - 6)
    structure, data, pos = [], [], 0
    while pos < cd_offset:
        assert blob[pos : pos + 4] == b"PK\x03\x04"
        size, n, m = struct.unpack_from("<I4xHH", blob, pos + 18)
        head = 30 + n + m
        structure += range(pos, pos + head)
        data += range(pos + head, pos + head + size)
        pos += head + size
    structure += range(cd_offset, len(blob))
    return structure, data


def decode(blob: bytes, output: str, decoder: StreamDecoder) -> bytes:
    """What ``lmgc decompress ARCHIVE -o OUTPUT`` writes (no ``--format``)."""
    reader = ArchiveReader(io.BytesIO(blob), "fuzz.lmgc")
    fmt = _output_format(output, None, reader.format, len(reader.entries))
    out = io.BytesIO()
    decompress_archive(reader, ArchiveDecoder(reader, decoder), fmt, out)
    return out.getvalue()


def sources(tmp_path: Path, grads: np.ndarray) -> dict[str, Path]:
    w, b = grads[:120].reshape(6, 20), grads[120:128]
    np.save(tmp_path / "g.npy", w)
    np.savez(tmp_path / "s.npz", w=w, b=b)
    np.savez_compressed(tmp_path / "d.npz", w=w, b=b)
    save_file({"w": w, "b": b}, str(tmp_path / "m.safetensors"), {"format": "pt"})
    (tmp_path / "r.bin").write_bytes(w.tobytes())
    np.save(tmp_path / "c.npy", grads[:1024].reshape(64, 16))
    return {
        "npy": tmp_path / "g.npy",
        "npy chunked": tmp_path / "c.npy",
        "npz stored": tmp_path / "s.npz",
        "npz deflated": tmp_path / "d.npz",
        "safetensors": tmp_path / "m.safetensors",
        "raw": tmp_path / "r.bin",
    }


KINDS = ["npy", "npy chunked", "npz stored", "npz deflated", "safetensors", "raw", "no manifest"]
OPTIONS = {"raw": ["--dtype", "float32"], "npy chunked": ["--chunk-size", "1024"]}


def archive(tmp_path: Path, grads: np.ndarray, kind: str) -> tuple[bytes, str, bytes]:
    """``(archive, output name, the bytes decompressing it must give)``."""
    decoder = StreamDecoder()
    if kind == "no manifest":  # what lmgc wrote before the manifest existed
        with zipfile.ZipFile(tmp_path / "old.lmgc", "w") as z:
            z.writestr("w.lmgc", old_stream("w"))
            z.writestr("b.lmgc", old_stream("b"))
        blob = (tmp_path / "old.lmgc").read_bytes()
        return blob, "old.npz", decode(blob, "old.npz", decoder)
    src = sources(tmp_path, grads)[kind]
    lmgc("compress", src, *OPTIONS.get(kind, []))
    blob = (tmp_path / f"{src.name}.lmgc").read_bytes()
    assert decode(blob, src.name, decoder) == src.read_bytes()
    return blob, src.name, src.read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_every_structure_bit_flip_decodes_exactly_or_fails(tmp_path, grads, kind):
    blob, output, original = archive(tmp_path, grads, kind)
    decoder = StreamDecoder()
    structure, data = structure_offsets(blob)
    bits = [8 * i + k for i in structure for k in range(8)]
    bits += random.Random(kind).sample([8 * i + k for i in data for k in range(8)], DATA_BITS)
    outcomes: Counter[str] = Counter()
    mutated = bytearray(blob)
    for bit in bits:
        mutated[bit >> 3] ^= 1 << (bit & 7)
        try:
            back = decode(bytes(mutated), output, decoder)
        except LMGCError as exc:
            outcomes[type(exc).__name__] += 1
        else:
            outcomes["identical" if back == original else "WRONG"] += 1
        mutated[bit >> 3] ^= 1 << (bit & 7)
    print(f"{kind}: {len(bits)} flips ({len(structure)} structure bytes): {dict(outcomes)}")
    assert outcomes["WRONG"] == 0, dict(outcomes)
    assert outcomes["identical"] < len(bits) // 2  # most flips hit what the checks guard
