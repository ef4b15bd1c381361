"""Helpers shared by the stages: exact float <-> JSON, dtype names, part bookkeeping."""

from __future__ import annotations

import numpy as np

from lmgc_core.dtypes import dtype_name, parse_dtype
from lmgc_core.errors import StreamError

__all__ = [
    "dtype_name",
    "expect_part",
    "float_to_hex",
    "hex_to_float",
    "is_float",
    "native",
    "parse_dtype",
]


def is_float(dtype: np.dtype) -> bool:
    """True for IEEE-style floating dtypes, ml_dtypes' bfloat16 included."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def native(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr).reshape(-1)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def float_to_hex(value, dtype: np.dtype) -> str:
    """The exact bit pattern of ``value`` as ``dtype``, as a hex string (JSON-safe, lossless)."""
    dtype = np.dtype(dtype)
    bits = np.array([value], dtype=dtype).view(f"u{dtype.itemsize}")[0]
    return f"0x{int(bits):0{2 * dtype.itemsize}x}"


def hex_to_float(text: str, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`float_to_hex`: a 0-d array of ``dtype`` (keeps the exact bits)."""
    dtype = np.dtype(dtype)
    try:
        bits = int(text, 16)
    except (TypeError, ValueError):
        raise StreamError(f"bad float bit pattern {text!r} in stage state") from None
    return np.array([bits], dtype=f"u{dtype.itemsize}").view(dtype)[0]


def expect_part(parts: dict[str, np.ndarray], name: str, stage: str) -> np.ndarray:
    if name not in parts:
        raise StreamError(f"{stage}: part {name!r} is missing from the stream")
    return native(parts[name])
