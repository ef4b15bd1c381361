"""Input files the CLI accepts — ``.npy``, ``.npz``, ``.safetensors``, raw bytes with a dtype —
read as a :class:`~lmgc_core.files.segments.FileLayout` and then tensor by tensor, chunk by chunk,
so that
memory stays bounded by the chunk size, not the file size."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np

from lmgc_core.files import (
    npy as npy_format,
)
from lmgc_core.files import (
    npz as npz_format,
)
from lmgc_core.files import (
    safetensors_file as safetensors_format,
)
from lmgc_core.files import (
    torch_zip as torch_format,
)
from lmgc_core.files.segments import (
    FORMATS,
    Data,
    Deflated,
    FileLayout,
    InputFileError,
    Literal,
    Tensor,
    check_shape,
    chunk_shapes,
)
from lmgc_core.files.source_hash import positional_fd
from lmgc_core.stream import container
from lmgc_core.util.dtypes import coding_view, user_dtype
from lmgc_core.util.errors import ConfigError

SUFFIXES = {".npy": "npy", ".npz": "npz", ".safetensors": "safetensors"}


def format_of_name(name: str) -> str | None:
    """``npy``/``npz``/``safetensors`` from a file name's suffix (any case), else None."""
    return SUFFIXES.get(Path(name).suffix.lower())


def sniff(f: IO[bytes], size: int) -> str | None:
    """Guess a format from the first bytes (for stdin and unknown suffixes)."""
    f.seek(0)
    head = f.read(9)
    f.seek(0)
    if head[:6] == npy_format.MAGIC:
        return "npy"
    if head[:4] == b"PK\x03\x04":
        return "torch" if torch_format.is_torch_zip(f) else "npz"
    if torch_format.is_legacy(f):  # its scan says what to do
        f.seek(0)
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        if 8 + length <= size:
            return "safetensors"
    return None


def guess_format(f: IO[bytes], size: int, name: str) -> str | None:
    """A file's format by its suffix, else by its first bytes (``None``: neither says)."""
    return format_of_name(name) or torch_format.format_of_name(name) or sniff(f, size)


def scan(f: IO[bytes], size: int, name: str, fmt: str | None, dtype: str | None) -> FileLayout:
    """The layout of an input: ``fmt`` if given, else ``--dtype`` means raw, else the suffix,
    else the magic bytes."""
    raw_of = None  # a file of a known format that --dtype codes as raw values: said
    if fmt is None and dtype is not None:
        own = guess_format(f, size, name)
        raw_of = own if own not in (None, "raw") else None
        fmt = "raw"
    fmt = fmt or guess_format(f, size, name)
    if fmt is None:
        f.seek(0)
        if f.read(len(container.MAGIC)) == container.MAGIC:
            raise ConfigError(f"{name} is an lmgc archive or stream: decompress it first")
        raise ConfigError(
            f"{name}: not a .npy, .npz or .safetensors file; raw input needs --dtype "
            "(e.g. --dtype float32)"
        )
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    f.seek(0)
    if fmt == "npy":
        return npy_format.scan(f, size, name)
    if fmt == "npz":
        return npz_format.scan(f, size, name)
    if fmt == "safetensors":
        return safetensors_format.scan(f, size, name)
    if fmt == "torch":
        return torch_format.scan(f, size, name)
    layout = _scan_raw(size, name, dtype)
    if raw_of is not None:
        layout.notes.append(
            f"{name} is a .{raw_of} file: --dtype codes its bytes (headers too) as raw {dtype} "
            "values; without --dtype its arrays are coded (it comes back byte for byte either way)"
        )
    return layout


def _scan_raw(size: int, name: str, dtype: str | None) -> FileLayout:
    if dtype is None:
        raise ConfigError(f"{name}: raw input needs --dtype (e.g. float32)")
    dt = user_dtype(dtype, "--dtype")
    if dt.itemsize == 0:
        check_shape((size,), dt, name)  # items of 0 bytes: its message says what to do
    if size % dt.itemsize:
        raise InputFileError(f"{name}: {size} bytes is not a whole number of {dt} items")
    tensor = Tensor("", dt, (size // dt.itemsize,))
    return FileLayout("raw", size, [tensor], [Data(0, 0)])


# -- chunks ----------------------------------------------------------------------------------------


def read_exact(stream: IO[bytes], n: int, where: str) -> np.ndarray:
    return _fill(n, lambda view, got: stream.readinto(view), where)


def _fill(n: int, read_into: Callable[[memoryview, int], int | None], where: str) -> np.ndarray:
    """``n`` bytes (a uint8 array) from ``read_into(view, offset)`` calls (each fills the start of
    ``view``, the part of the buffer from ``offset`` on); a read of nothing before the end is a
    truncation. The buffer is not zeroed first (``bytearray(n)`` would be, holding the GIL for
    ~5 ms per 16 MiB chunk while other threads wait): the reads fill it, GIL released."""
    buf = np.empty(n, dtype=np.uint8)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = read_into(view[got:], got)
        if not k:
            raise InputFileError(f"{where}: file ended early (truncated while reading data)")
        got += k
    return buf


def tensor_chunks(
    stream: IO[bytes], tensor: Tensor, chunk_bytes: int, where: str
) -> Iterator[np.ndarray]:
    """The tensor's chunks as arrays of its dtype, read sequentially from ``stream``."""
    for shape in chunk_shapes(tensor, chunk_bytes):
        count = int(np.prod(shape, dtype=object))
        buf = read_exact(stream, count * tensor.dtype.itemsize, where)
        if tensor.dtype.itemsize == 0:
            yield np.zeros(shape, dtype=tensor.dtype)
        else:
            yield np.frombuffer(buf, dtype=tensor.dtype).reshape(shape)


def chunk_readers(
    stream: IO[bytes], tensor: Tensor, chunk_bytes: int, where: str
) -> Iterator[Callable[[], np.ndarray]]:
    """:func:`tensor_chunks` with each chunk read when its function is called. When ``stream``
    is a file with a descriptor (a plain tensor's bytes), that read is positional
    (``os.preadv``) and may run on any thread, so the threads that code chunks read their own
    and the caller's thread only hands them out; otherwise (an inflated .npz member) the chunk is
    read here, in order. ``stream`` is left after the tensor either way."""
    fd = positional_fd(stream)
    if fd is None or tensor.dtype.itemsize == 0:
        for chunk in tensor_chunks(stream, tensor, chunk_bytes, where):
            yield lambda chunk=chunk: chunk
        return
    pos = stream.tell()
    for shape in chunk_shapes(tensor, chunk_bytes):
        n = int(np.prod(shape, dtype=object)) * tensor.dtype.itemsize
        yield partial(_read_at, fd, pos, n, tensor.dtype, shape, where)
        pos += n
    stream.seek(pos)


def _read_at(
    fd: int, pos: int, n: int, dtype: np.dtype, shape: tuple[int, ...], where: str
) -> np.ndarray:
    buf = _fill(n, lambda view, got: os.preadv(fd, [view], pos + got), where)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def tensor_streams(f: IO[bytes], layout: FileLayout, where: str) -> Iterator[tuple[int, IO[bytes]]]:
    """``(tensor index, stream positioned at its data)`` in file order. The caller reads exactly
    the tensor's bytes before asking for the next one."""
    zf: zipfile.ZipFile | None = None
    for seg in layout.segments:
        if isinstance(seg, Data):
            f.seek(seg.offset)
            yield seg.index, f
        elif isinstance(seg, Deflated):
            zf = zf or npz_format.open_zip(f, where)
            try:
                with zf.open(seg.member) as member:
                    pos = 0
                    for inner in seg.segments:
                        if isinstance(inner, Literal):
                            read_exact(member, len(inner.data), where)
                            pos += len(inner.data)
                        else:
                            read_exact(member, inner.offset - pos, where)
                            yield inner.index, member  # type: ignore[misc]
                            pos = inner.offset + layout.tensors[inner.index].nbytes
            except npz_format.ZIP_ERRORS as exc:
                raise InputFileError(f"{where}: damaged .npz member ({exc})") from None


def load_arrays(
    f: IO[bytes],
    size: int,
    name: str,
    dtype: str | None = None,
    fmt: str | None = None,
    notes: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Every tensor of a file as a whole array (``estimate`` needs them whole), as coded:
    non-numeric arrays come as their integer view (:func:`~lmgc_core.util.dtypes.coding_view`).
    ``notes`` gets what the scan noted (``--dtype`` on a .npy: its bytes read as raw values),
    which ``compress`` warns of and ``estimate`` dropped."""
    layout = scan(f, size, name, fmt, dtype)
    if notes is not None:
        notes += layout.notes
    out: dict[str, np.ndarray] = {}
    for index, stream in tensor_streams(f, layout, name):
        tensor = layout.tensors[index]
        if tensor.bytes_only:  # not an array of the file: read past it
            for _ in tensor_chunks(stream, tensor, 1 << 20, name):
                pass
            continue
        (chunk,) = tensor_chunks(stream, tensor, max(tensor.nbytes, 1), name)
        out[tensor.name] = coding_view(chunk.T if tensor.fortran else chunk)[0]
    return {t.name: out[t.name] for t in layout.tensors if t.name in out}
