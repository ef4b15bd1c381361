"""Array <-> raw bytes in a chosen byte order, for any dtype (bfloat16 included).

Serializers see values as bytes; "most significant first" (big) puts sign and exponent first in
each value, as text people write; "little" reproduces ``tobytes()`` on x86 (the LM-GC code).
"""

from __future__ import annotations

import sys

import numpy as np

from lmgc_core.util.errors import ConfigError

BYTE_ORDERS = ("big", "little")


def check_byte_order(byte_order: str) -> str:
    if byte_order not in BYTE_ORDERS:
        raise ConfigError(f"byte_order must be one of {BYTE_ORDERS}, not {byte_order!r}")
    return byte_order


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality (NaN payloads and -0.0 included) plus dtype and shape, without
    copying contiguous arrays' bytes."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.itemsize == 0:
        return True
    flat = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (a, b)]
    return bool(np.array_equal(*flat))


def native(arr: np.ndarray) -> np.ndarray:
    """``arr`` flattened, in the machine's byte order (same values; a copy only if swapped).

    Stages receive parts in the caller's byte order (a ``>f4`` array stays ``>f4``): anything
    that looks at bits (``view``, bit masks) must work on ``native(part)``, else big- and
    little-endian inputs of the same values give different results."""
    arr = np.asarray(arr).reshape(-1)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def to_bytes(data: np.ndarray, byte_order: str) -> np.ndarray:
    """Flat ``uint8`` view of ``data`` with each item's bytes in ``byte_order``."""
    data = np.ascontiguousarray(data).reshape(-1)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    size = data.dtype.itemsize
    raw = data.view(np.uint8).reshape(-1, size)
    if size > 1 and byte_order != sys.byteorder:
        raw = raw[:, ::-1]
    return np.ascontiguousarray(raw).reshape(-1)


def from_bytes(raw: np.ndarray, dtype: np.dtype, count: int, byte_order: str) -> np.ndarray:
    """Inverse of :func:`to_bytes`: ``count`` items of ``dtype`` (in ``dtype``'s own byte order)."""
    size = dtype.itemsize
    raw = np.asarray(raw, dtype=np.uint8)[: count * size].reshape(count, size)
    if size > 1 and byte_order != sys.byteorder:
        raw = raw[:, ::-1]
    native = dtype if dtype.isnative else dtype.newbyteorder("=")
    values = np.ascontiguousarray(raw).reshape(-1).view(native)
    return values if dtype.isnative else values.astype(dtype)
