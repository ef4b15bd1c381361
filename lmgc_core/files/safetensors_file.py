"""``.safetensors`` read by hand: 8-byte little-endian header length, JSON header, raw data.

No torch and no safetensors package needed; bfloat16 and float8 map to ml_dtypes when it is
installed. Dtypes without a numpy equivalent (``F4``, ``F6_*``, unknown future ones) are coded as
their raw bytes; the file still comes back byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import struct
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
from lmgc_core.util.dtypes import is_ml_dtype
from lmgc_core.util.json_keys import unique_keys

MAX_HEADER = 100 << 20  # the safetensors library's own limit

# safetensors dtype -> numpy dtype (str) or ml_dtypes name; bits per element
_NUMPY = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "U16": "<u2",
    "I16": "<i2",
    "F16": "<f2",
    "U32": "<u4",
    "I32": "<i4",
    "F32": "<f4",
    "U64": "<u8",
    "I64": "<i8",
    "F64": "<f8",
    "C64": "<c8",
}
_ML = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}


def numpy_dtype(tag: str) -> np.dtype:
    """numpy dtype for a safetensors dtype tag (``uint8`` bytes when numpy has none)."""
    if tag in _NUMPY:
        return np.dtype(_NUMPY[tag])
    if tag in _ML:
        try:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, _ML[tag]))
        except (ImportError, AttributeError):
            return np.dtype(f"<u{1 if tag.startswith('F8') else 2}")
    return np.dtype(np.uint8)


def tag_of(dtype: np.dtype) -> str | None:
    """safetensors tag for a numpy dtype, or None when safetensors cannot hold it."""
    dtype = np.dtype(dtype)
    for tag, name in _ML.items():
        if dtype.name == name:
            return tag
    little = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    return next((tag for tag, text in _NUMPY.items() if np.dtype(text) == little), None)


def as_tagged(tensor: Tensor) -> Tensor:
    """The tensor with the dtype its tag names where its own only carries the bytes (a torch
    file's big-endian bfloat16, coded as ``>u2``: converted as uint16 it lost its type)."""
    if not tensor.tag or tensor.dtype.byteorder != ">":
        return tensor
    tagged = numpy_dtype(tensor.tag)
    if not is_ml_dtype(tagged) or tagged.itemsize != tensor.dtype.itemsize:
        return tensor
    return dataclasses.replace(tensor, dtype=tagged)


def tagged_values(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``arr``'s items as the dtype :func:`as_tagged` gave: its bytes in little-endian order."""
    if arr.dtype == dtype:
        return arr
    return arr.astype(arr.dtype.newbyteorder("<")).view(dtype)


def _element_bits(tag: str) -> int | None:
    if tag in _NUMPY or tag in _ML:
        return numpy_dtype(tag).itemsize * 8 if tag in _NUMPY else (16 if tag == "BF16" else 8)
    return _BITS.get(tag)


_pairs = unique_keys(lambda key: InputFileError(f"duplicate key {key!r} in the safetensors header"))


def scan(f: IO[bytes], size: int, where: str) -> FileLayout:
    """Layout of a ``.safetensors`` file: its header bytes, then every tensor in offset order."""
    head = f.read(8)
    if len(head) < 8:
        raise InputFileError(f"{where}: not a .safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER or 8 + length > size:
        raise InputFileError(
            f"{where}: not a .safetensors file or truncated (header length {length}, "
            f"file {size} bytes)"
        )
    text = f.read(length)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_pairs)
    except InputFileError as exc:
        raise InputFileError(f"{where}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputFileError(f"{where}: .safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise InputFileError(f"{where}: .safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise InputFileError(f"{where}: __metadata__ must map strings to strings")
    data_start = 8 + length
    data_size = size - data_start
    tensors, spans = [], []
    for name, entry in header.items():
        tensor, begin, end = _tensor(name, entry, data_size, where)
        spans.append((begin, end, len(tensors)))
        tensors.append(tensor)
    # The header, gaps between tensors and trailing bytes are kept as they are (byte tensors
    # when large: a header of many tensors or 100 MB of padding stays out of the manifest).
    segments: list[Any] = [byte_run(lambda: head + text, 0, data_start, tensors, where)]
    pos = 0
    for begin, end, index in sorted(spans):
        if begin < pos:
            raise InputFileError(f"{where}: tensors overlap at data offset {begin}")
        if begin > pos:
            segments.append(_run(f, data_start + pos, begin - pos, tensors, where))
        segments.append(Data(index, data_start + begin))  # empty tensors too: one stream each
        pos = end
    if pos < data_size:
        segments.append(_run(f, data_start + pos, data_size - pos, tensors, where))
    return FileLayout("safetensors", size, tensors, segments, metadata=metadata)


def _run(f: IO[bytes], offset: int, n: int, tensors: list[Tensor], where: str) -> Literal | Data:
    def read() -> bytes:
        f.seek(offset)
        return f.read(n)

    return byte_run(read, offset, n, tensors, where)


def _tensor(name: str, entry: Any, data_size: int, where: str) -> tuple[Tensor, int, int]:
    bad = f"{where}: tensor {name!r} has a bad header entry"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise InputFileError(f"{bad} (needs dtype, shape, data_offsets)")
    tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(tag, str):
        raise InputFileError(f"{bad} (dtype)")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise InputFileError(f"{bad} (shape {shape!r})")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
    ):
        raise InputFileError(f"{bad} (data_offsets {offsets!r}: not two integers)")
    if not 0 <= offsets[0] <= offsets[1] <= data_size:
        raise InputFileError(f"{bad} (data_offsets {offsets!r} outside the data)")
    begin, end = offsets
    count = int(np.prod(shape, dtype=object))
    bits = _element_bits(tag)
    dtype = numpy_dtype(tag)
    if bits is None or bits % 8:  # unknown or packed sub-byte (F4, F6): coded as bytes
        if bits is not None and (count * bits + 7) // 8 != end - begin:
            raise InputFileError(f"{bad} ({count} x {tag} is not {end - begin} bytes)")
        tensor = Tensor(name, np.dtype(np.uint8), (end - begin,), tag=tag)
        tensor.declared_shape = tuple(shape)
    else:
        if count * dtype.itemsize != end - begin:
            raise InputFileError(f"{bad} ({count} x {tag} is not {end - begin} bytes)")
        check_shape(tuple(shape), dtype, bad)
        tensor = Tensor(name, dtype, tuple(shape), tag=tag)
    tensor.nbytes = end - begin
    return tensor, begin, end


def header_bytes(tensors: list[Tensor], metadata: dict[str, Any] | None) -> bytes:
    """A header for ``tensors`` laid out back to back in this order, padded to 8 bytes (as the
    safetensors library pads)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    pos = 0
    for t in tensors:
        tag = t.tag or tag_of(t.dtype)
        if tag is None:
            raise InputFileError(
                f"safetensors has no dtype for {t.dtype} (tensor {t.name!r}); use .npz or .npy"
            )
        header[t.name] = {
            "dtype": tag,
            "shape": list(t.declared_shape if t.declared_shape is not None else t.shape),
            "data_offsets": [pos, pos + t.nbytes],
        }
        pos += t.nbytes
    try:  # names in raw UTF-8, as the safetensors package writes them (its very bytes)
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate: only an escape can say it
        text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
