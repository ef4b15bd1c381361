"""Writing decoded tensors out: the source file rebuilt byte for byte from its segments, or a
conversion to ``.npy``, ``.npz``, ``.safetensors`` or raw bytes. Tensors arrive chunk by chunk
(C-order bytes as they lay in the source), so nothing is held whole unless a conversion must
reorder it (a Fortran-ordered array into safetensors)."""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np

from . import npy_format, safetensors_format
from .layout import Data, Deflated, InputFileError, Literal, Segment, Tensor

Chunks = Callable[[int], Iterator[np.ndarray]]
"""``chunks(tensor index)``: the decoded chunks of a tensor, in order."""


class HashingWriter:
    """Counts and hashes what goes to ``out`` (the rebuilt file is checked against the
    source's SHA-256)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.out.write(view)
        self.size += len(view)


def _bytes(arr: np.ndarray) -> memoryview:
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8)) if arr.dtype.itemsize else memoryview(b"")


def rebuild(segments: list[Segment], chunks: Chunks, out: HashingWriter) -> None:
    """The source file: literal bytes and tensor data in file order."""
    for seg in segments:
        if isinstance(seg, Literal):
            out.write(seg.data)
        elif isinstance(seg, Data):
            for arr in chunks(seg.index):
                out.write(_bytes(arr))
        else:
            _rebuild_deflated(seg, chunks, out)


def _rebuild_deflated(seg: Deflated, chunks: Chunks, out: HashingWriter) -> None:
    packer = zlib.compressobj(seg.level, zlib.DEFLATED, -15)
    for inner in seg.segments:
        if isinstance(inner, Literal):
            out.write(packer.compress(inner.data))
        else:
            for arr in chunks(inner.index):
                out.write(packer.compress(_bytes(arr)))
    out.write(packer.flush())


def write_raw(tensors: list[Tensor], chunks: Chunks, out: HashingWriter) -> None:
    """Every tensor's bytes, as they lay in the source, back to back."""
    for index in range(len(tensors)):
        for arr in chunks(index):
            out.write(_bytes(arr))


def write_npy(tensors: list[Tensor], chunks: Chunks, out: HashingWriter) -> None:
    if len(tensors) != 1:
        raise InputFileError(
            f"the archive holds {len(tensors)} arrays; a .npy holds one: use .npz or .safetensors"
        )
    out.write(npy_format.header_bytes(tensors[0]))
    for arr in chunks(0):
        out.write(_bytes(arr))


def write_npz(tensors: list[Tensor], chunks: Chunks, out: HashingWriter) -> None:
    """An uncompressed ``.npz`` as ``np.savez`` writes one (``arr_0`` for nameless arrays)."""
    with zipfile.ZipFile(out.out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for index, tensor in enumerate(tensors):
            name = (tensor.name or f"arr_{index}") + ".npy"
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                member.write(npy_format.header_bytes(tensor))
                for arr in chunks(index):
                    member.write(_bytes(arr))


def write_safetensors(
    tensors: list[Tensor], metadata: dict[str, Any] | None, chunks: Chunks, out: HashingWriter
) -> None:
    """A ``.safetensors`` file, tensors in the archive's order, little-endian data."""
    targets = []
    for t in tensors:
        little = t.dtype.newbyteorder("<") if t.dtype.byteorder == ">" else t.dtype
        name = t.name or f"arr_{len(targets)}"  # as np.savez names positional arrays
        targets.append(Tensor(name, little, t.shape, tag=t.tag, nbytes=t.nbytes))
        targets[-1].declared_shape = t.declared_shape
    if len({t.name for t in targets}) != len(targets):
        raise InputFileError("safetensors needs distinct tensor names; use .npz")
    out.write(safetensors_format.header_bytes(targets, metadata))
    for index, (src, dst) in enumerate(zip(tensors, targets, strict=True)):
        parts: Iterable[np.ndarray] = chunks(index)
        if src.fortran:  # safetensors is C order only: the whole array, transposed
            whole = np.concatenate([p.reshape(-1) for p in parts]).reshape(src.stored_shape)
            parts = [np.ascontiguousarray(whole.T)]
        for arr in parts:
            out.write(_bytes(arr.astype(dst.dtype, copy=False)))
