"""``.npy`` headers: parsed by hand (not ``np.load``) so that a bad file gives one clear error,
the exact header bytes are kept for a byte-identical rebuild, and the data is never loaded whole.
"""

from __future__ import annotations

import ast
import struct
from functools import partial
from typing import IO, Any

import numpy as np

from lmgc_core.files.segments import (
    Data,
    FileLayout,
    InputFileError,
    Literal,
    Tensor,
    byte_run,
    check_shape,
)

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20
MAX_HEADER_ITEMS = 1 << 15
"""Most brackets and commas a header may hold before it is parsed: ``ast.literal_eval`` of a
hostile 1 MiB header of empty lists took 520 MB (numpy itself refuses headers over 10,000 bytes
unless told otherwise; a record dtype of a few thousand fields stays well under this)."""


def read_header(f: IO[bytes], where: str) -> tuple[bytes, dict[str, Any]]:
    """The raw header bytes (magic included) and its parsed ``descr``/``fortran_order``/``shape``,
    reading from ``f``'s current position."""
    start = f.read(8)
    if len(start) < 8 or start[:6] != MAGIC:
        raise InputFileError(f"{where}: not a .npy file (bad magic)")
    major, minor = start[6], start[7]
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise InputFileError(f"{where}: unsupported .npy version {major}.{minor}")
    size_bytes = f.read(2 if major == 1 else 4)
    if len(size_bytes) < (2 if major == 1 else 4):
        raise InputFileError(f"{where}: .npy file ends inside its header")
    (length,) = struct.unpack("<H" if major == 1 else "<I", size_bytes)
    if length > MAX_HEADER:
        raise InputFileError(f"{where}: .npy header of {length} bytes is implausible")
    text = f.read(length)
    if len(text) < length:
        raise InputFileError(f"{where}: .npy file ends inside its header")
    items = sum(text.count(c) for c in (b"(", b"[", b"{", b","))
    if items > MAX_HEADER_ITEMS:
        raise InputFileError(f"{where}: .npy header holds over {MAX_HEADER_ITEMS} items")
    try:
        literal = ast.literal_eval(text.decode("utf8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError, TypeError):
        raise InputFileError(f"{where}: .npy header is not a Python literal") from None
    if not isinstance(literal, dict) or set(literal) != {"descr", "fortran_order", "shape"}:
        raise InputFileError(f"{where}: .npy header lacks descr/fortran_order/shape")
    return start + size_bytes + text, literal


def header_dtype(header: dict[str, Any]) -> np.dtype | None:
    """The dtype a parsed header's descr names; ``None`` for a bad descr."""
    try:
        return np.lib.format.descr_to_dtype(header["descr"])
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, SyntaxError):
        return None


def holds_objects(header: dict[str, Any]) -> bool:
    """Whether a parsed header's dtype holds pickled Python objects, which have no fixed bytes
    to code (a bad descr is not: :func:`tensor_of` says what is wrong with it)."""
    dtype = header_dtype(header)
    return dtype is not None and dtype.hasobject


def tensor_of(header: dict[str, Any], name: str, where: str) -> Tensor:
    """The tensor a parsed header describes (object dtypes refused)."""
    dtype = header_dtype(header)
    if dtype is None:
        raise InputFileError(f"{where}: .npy header has a bad descr {header['descr']!r}")
    if dtype.hasobject:
        raise InputFileError(
            f"{where}: dtype {dtype} holds Python objects (pickled), which lmgc cannot compress"
        )
    if dtype.subdtype is not None:  # numpy writes its shape into "shape"; np.load refuses it
        raise InputFileError(f"{where}: .npy header has a subarray descr {header['descr']!r}")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise InputFileError(f"{where}: .npy header has a bad shape {shape!r}")
    fortran = header["fortran_order"]
    if not isinstance(fortran, bool):
        raise InputFileError(f"{where}: .npy header has a bad fortran_order {fortran!r}")
    check_shape(shape, dtype, where)
    return Tensor(name, dtype, shape, fortran=fortran and len(shape) > 1)


def scan(f: IO[bytes], size: int, where: str) -> FileLayout:
    """Layout of a whole ``.npy`` file: header literal, then the data, then nothing."""
    raw, header = read_header(f, where)
    tensor = tensor_of(header, "", where)
    end = len(raw) + tensor.nbytes
    if size < end:
        raise InputFileError(
            f"{where}: truncated .npy file ({size} bytes, its header promises {end})"
        )
    layout = FileLayout("npy", size, [tensor], [Literal(raw), Data(0, len(raw))])
    if size > end:  # trailing bytes np.load ignores: kept, as a byte tensor when large
        read = partial(_read, f, end, size - end)
        layout.segments.append(byte_run(read, end, size - end, layout.tensors, where))
    return layout


def _read(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def header_bytes(tensor: Tensor) -> bytes:
    """A header as ``np.save`` writes it (version 1.0 when it fits, else 2.0 / 3.0)."""
    import io

    descr = np.lib.format.dtype_to_descr(tensor.dtype)
    try:  # ml_dtypes' float8_e5m2 says '<f1', which np.load cannot read back
        np.lib.format.descr_to_dtype(descr)
    except (ValueError, TypeError, SyntaxError):
        descr = f"<V{tensor.dtype.itemsize}"  # as the other float8s and bfloat16 go out
    d = {
        "descr": descr,
        "fortran_order": tensor.fortran,
        "shape": tuple(tensor.shape),
    }
    buf = io.BytesIO()
    try:  # what np.save does: version 1.0 when the header fits, else 2.0, else 3.0
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # (UnicodeEncodeError is one: a field name outside Latin-1)
        buf = io.BytesIO()
        try:
            np.lib.format.write_array_header_2_0(buf, d)
        except UnicodeEncodeError:
            return _utf8_header(d)
    return buf.getvalue()


def _utf8_header(d: dict[str, Any]) -> bytes:
    """Version 3.0, which ``np.save`` writes for a header only UTF-8 can spell (a record field
    named outside Latin-1; a conversion of one failed with the codec's error): version 2.0's
    layout with the text in UTF-8. numpy writes it only through private functions, so the
    layout is spelled here, as theirs: sorted keys, room for the growth axis, padded to 64."""
    fmt = np.lib.format
    text = "{" + "".join(f"'{k}': {v!r}, " for k, v in sorted(d.items())) + "}"
    shape = d["shape"]
    if shape:
        grows = shape[-1 if d["fortran_order"] else 0]
        text += " " * (fmt.GROWTH_AXIS_MAX_DIGITS - len(repr(grows)))
    body = text.encode("utf-8")
    size = len(body) + 1
    pad = fmt.ARRAY_ALIGN - (fmt.MAGIC_LEN + 4 + size) % fmt.ARRAY_ALIGN
    return fmt.magic(3, 0) + struct.pack("<I", size + pad) + body + b" " * pad + b"\n"
