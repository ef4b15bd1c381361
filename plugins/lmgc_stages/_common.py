"""Helpers shared by the stages: exact float <-> JSON, dtype names, part bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lmgc_core.util.bytes_layout import native
from lmgc_core.util.dtypes import dtype_name, is_float, parse_dtype
from lmgc_core.util.errors import StreamError

__all__ = [
    "dtype_name",
    "expect_part",
    "float_to_hex",
    "hex_to_float",
    "is_float",
    "native",
    "state_dtype",
]


def float_to_hex(value, dtype: np.dtype) -> str:
    """The exact bit pattern of ``value`` as ``dtype``, as a hex string (JSON-safe, lossless):
    the number's bits, whatever the byte order (a stream's recorded dtype is ``>f4`` where it
    was made on a big-endian machine, and the text must mean the same value everywhere)."""
    dtype = np.dtype(dtype).newbyteorder("=")
    bits = np.array([value], dtype=dtype).view(f"=u{dtype.itemsize}")[0]
    return f"0x{int(bits):0{2 * dtype.itemsize}x}"


def state_dtype(text: object, stage: str) -> np.dtype:
    """The dtype a stage state names, which must be a float type: the stages code only float
    parts and record their dtype. Any other was a forgery's (``|V2000000000``: gigabytes
    allocated from a 211-byte stream before its checksum failed)."""
    dtype = parse_dtype(text)  # type: ignore[arg-type]
    if not is_float(dtype):
        raise StreamError(f"{stage}: stage state names dtype {text!r}, not a float type")
    return dtype


def hex_to_float(text: str, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`float_to_hex`: a 0-d array of ``dtype`` (keeps the exact bits)."""
    dtype = np.dtype(dtype)
    if not is_float(dtype):  # a float's bits: no 2 GB integer bound from a forged dtype
        raise StreamError(f"float bit pattern in stage state for dtype {dtype}, not a float type")
    try:
        bits = int(text, 16)
    except (TypeError, ValueError):
        raise StreamError(f"bad float bit pattern {text!r} in stage state") from None
    if not 0 <= bits < 1 << (8 * dtype.itemsize):
        raise StreamError(f"float bit pattern {text!r} in stage state does not fit {dtype}")
    value = np.array([bits], dtype=f"=u{dtype.itemsize}").view(dtype.newbyteorder("="))
    return value.astype(dtype)[0]


def float_parts(
    parts: dict[str, np.ndarray], out: dict[str, np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    """The float parts of ``parts`` (native byte order), in order; every other part goes to
    ``out`` unchanged where it stands (the order of the parts is the order in the stream)."""
    for name, arr in parts.items():
        arr = native(arr)
        if is_float(arr.dtype):
            yield name, arr
        else:
            out[name] = arr


def expect_part(parts: dict[str, np.ndarray], name: str, stage: str) -> np.ndarray:
    if name not in parts:
        raise StreamError(f"{stage}: part {name!r} is missing from the stream")
    return native(parts[name])
