"""A base chunk is found and read alone: what a stream's base costs does not grow with how many
chunks the archive's chunk size cuts the base tensor into. A forged archive declaring
``chunk_bytes`` 1 had ``--base`` cut a 16 MB tensor into 16 million readers (5 GB, 150 s) to
read one byte of it. Real files on disk, the real coder."""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lmgc_core import Pipeline
from lmgc_core.files import readers
from lmgc_core.files.base_file import BaseFile, file_digest
from lmgc_core.files.segments import Tensor, chunk_count, chunk_span
from tests.cli_helpers import lmgc

SHAPES = [(), (0,), (5,), (1000,), (3, 7), (40, 25), (2, 3, 5), (9, 1, 4)]


def listed_chunks(shape: tuple[int, ...], item: int, chunk_bytes: int) -> list[tuple[int, ...]]:
    """The chunking rule, spelled out on its own (an oracle for the library's): one chunk when
    the tensor fits; else whole rows along the first axis, as many as fit (at least one),
    when a row fits; else flat runs of as many items as fit (at least one)."""
    nbytes = int(np.prod(shape, dtype=object)) * item
    if nbytes <= chunk_bytes or item == 0:
        return [shape]
    row = int(np.prod(shape[1:], dtype=object)) * item
    if len(shape) > 1 and row <= chunk_bytes:
        rows = max(1, chunk_bytes // row)
        return [(min(rows, shape[0] - s), *shape[1:]) for s in range(0, shape[0], rows)]
    total, step = nbytes // item, max(1, chunk_bytes // item)
    return [(min(step, total - s),) for s in range(0, total, step)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["<f4", "<f8", "|u1", "<i2"])
def test_chunks_are_cut_by_the_rule_and_each_found_alone(shape, dtype):
    tensor = Tensor("t", np.dtype(dtype), shape)
    for chunk_bytes in (1, 3, 8, 20, 100, 4000, 1 << 20):
        want = listed_chunks(shape, tensor.dtype.itemsize, chunk_bytes)
        assert readers.chunk_shapes(tensor, chunk_bytes) == want
        assert chunk_count(tensor, chunk_bytes) == len(want)
        start = 0
        for i, chunk in enumerate(want):
            assert chunk_span(tensor, chunk_bytes, i) == (start, chunk)
            start += int(np.prod(chunk, dtype=object)) * tensor.dtype.itemsize
        assert start == tensor.nbytes or tensor.nbytes == 0
        assert chunk_span(tensor, chunk_bytes, len(want)) is None
        assert chunk_span(tensor, chunk_bytes, -1) is None


def _base(tmp_path: Path, fmt: str) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    tensors = {"w": rng.standard_normal((50, 40)).astype(np.float32), "v": np.arange(999.0)}
    if fmt == "safetensors":
        path = tmp_path / "old.safetensors"
        save_file(tensors, str(path))
    else:  # a deflated member is inflated whole, once; a stored one read in place
        path = tmp_path / "old.npz"
        (np.savez_compressed if fmt == "npz-deflated" else np.savez)(path, **tensors)
    return path, tensors


@pytest.mark.parametrize("fmt", ["safetensors", "npz-deflated", "npz-stored"])
def test_a_base_chunk_is_read_alone_at_any_chunk_size(tmp_path, monkeypatch, fmt):
    path, tensors = _base(tmp_path, fmt)
    cut = readers.chunk_shapes
    longest = []

    def spy(tensor, chunk_bytes):  # every list of chunks built while reading base chunks
        out = cut(tensor, chunk_bytes)
        longest.append(len(out))
        return out

    monkeypatch.setattr(readers, "chunk_shapes", spy)
    with open(path, "rb") as f:
        base = BaseFile(f, str(path))
        for name, arr in tensors.items():
            tensor = Tensor(name, arr.dtype, arr.shape)
            for chunk_bytes in (1, 12, 700, 1 << 20):
                flat = arr.reshape(-1).view(np.uint8)
                count = len(cut(tensor, chunk_bytes))
                for i in sorted({0, 1, 5, count - 1} & set(range(count))):
                    start, shape = chunk_span(tensor, chunk_bytes, i)
                    n = int(np.prod(shape, dtype=object)) * arr.itemsize
                    got = base.chunk(name, i, chunk_bytes)
                    assert got.tobytes() == flat[start : start + n].tobytes(), (name, i)
    assert max(longest) <= 1  # one chunk at a time (a deflated member's skips: one each)


def test_a_forged_chunk_size_costs_one_chunk_of_the_base(tmp_path):
    """The forged archive itself: manifest chunk_bytes 1, its one member coded against the
    first byte of a 4 MB base tensor. It decodes, reading that byte alone."""
    rng = np.random.default_rng(1)
    w = rng.integers(0, 255, 4 << 20, dtype=np.uint8)
    s = np.array([7], np.uint8)
    save_file({"s": s, "w": w}, str(tmp_path / "old.safetensors"))
    save_file({"s": s}, str(tmp_path / "new.safetensors"))
    lmgc("compress", "-q", tmp_path / "new.safetensors", "-o", tmp_path / "honest.lmgc")
    with zipfile.ZipFile(tmp_path / "honest.lmgc") as z:
        manifest = json.loads(z.read("__lmgc__.json"))
    stream = Pipeline.from_config(level=1).compress(s, base=w[:1], base_name="w@0")
    with open(tmp_path / "old.safetensors", "rb") as f:
        size, digests = file_digest(f)
    manifest.update(lmgc_archive=3, chunk_bytes=1, notes=[])
    manifest["base"] = {"name": "old.safetensors", "size": size, **digests, "format": "safetensors"}
    manifest["tensors"][0]["base"] = "w"
    (member,) = manifest["tensors"][0]["members"]
    manifest["members"] = [[member, len(stream), zlib.crc32(stream)]]
    with zipfile.ZipFile(tmp_path / "forged.lmgc", "w") as z:
        z.writestr(member, stream)
        z.writestr("__lmgc__.json", json.dumps(manifest), zipfile.ZIP_DEFLATED)
    out = tmp_path / "out.safetensors"
    lmgc("decompress", "-q", tmp_path / "forged.lmgc", "--base", tmp_path / "old.safetensors",
         "-o", out)  # fmt: skip
    from safetensors.numpy import load_file

    assert load_file(str(out))["s"].tolist() == [7]
