"""Code a tensor against a reference of the same shape and dtype (a checkpoint against the one
before it, a fine-tune against its base), losslessly for every bit pattern.

Why a delta: over a few hundred training steps most weights move by a few ulps, so the
difference of the two bit patterns, read as ordered integers, is small where the value itself is
noise. Each block keeps whichever of two exact transforms codes smaller:

* *ulp distance*: both values mapped to ordered integers (sign-magnitude to a monotone unsigned
  integer, so ``-0.0`` and ``+0.0`` are neighbours), then the wrapping difference;
* *XOR* of the raw bits (what ZipNN and BitX do), better where signs flip or values are replaced.

Integers use the wrapping difference of their raw bits or the XOR. Blocks are the float prior's
segments (whole rows of the tensor), independent, and each carries a 128-bit checksum of the
decoded values, so a wrong base or a damaged block is caught without a hash of the whole array.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmgc_core.util.errors import ChecksumError, MismatchError, StreamError
from lmgc_core.util.parallel import map_ordered

from . import fast
from .codec import seg_array
from .formats import as_uint, float_format, from_uint, segments
from .int_codec import decode_int_block, encode_int_block

VERSION = 0
"""The block format this module writes (recorded in ``meta``; another one is refused)."""
LEVEL_FAST, LEVEL_MAX = 1, 2
BLOCK_VALUES = {LEVEL_FAST: 1 << 18, LEVEL_MAX: 1 << 20}
ULP, XOR = 0, 1
_HEAD = struct.Struct("<B16s")  # transform, checksum of the decoded values


def _ordered(bits: np.ndarray, is_float: bool) -> np.ndarray:
    """Floats' bit patterns as monotone unsigned integers (negative: all bits flipped, positive:
    sign bit set); integers are left as they are (their wrapping difference is exact)."""
    if not is_float:
        return bits
    top = np.dtype(bits.dtype).itemsize * 8 - 1
    sign = bits.dtype.type(1 << top)
    flip = (bits >> bits.dtype.type(top)) * bits.dtype.type((1 << (top + 1)) - 1)
    return bits ^ (flip | sign)


def _unordered(ordered: np.ndarray, is_float: bool) -> np.ndarray:
    """Inverse of :func:`_ordered`."""
    if not is_float:
        return ordered
    top = np.dtype(ordered.dtype).itemsize * 8 - 1
    one = ordered.dtype.type(1)
    sign = ordered.dtype.type(1 << top)
    flip = ((ordered >> ordered.dtype.type(top)) ^ one) * ordered.dtype.type((1 << (top + 1)) - 1)
    return ordered ^ (flip | sign)


def _zigzag(d: np.ndarray) -> np.ndarray:
    """Wrapping differences (unsigned) to small unsigned integers: 0, -1, 1, -2, ..."""
    top = d.dtype.type(d.dtype.itemsize * 8 - 1)
    neg = (d >> top) * d.dtype.type(np.iinfo(d.dtype).max)
    return (d << d.dtype.type(1)) ^ neg


def _unzigzag(z: np.ndarray) -> np.ndarray:
    one = z.dtype.type(1)
    return (z >> one) ^ ((z & one) * z.dtype.type(np.iinfo(z.dtype).max))


def _digest(values: np.ndarray) -> bytes:
    """128-bit checksum of a block's values as little-endian bytes."""
    return hashlib.blake2b(values.astype(values.dtype.newbyteorder("<")).view(np.uint8),
                           digest_size=16).digest()


def _span(segs: np.ndarray) -> tuple[int, int]:
    """A block's segments are consecutive: the value range they cover."""
    return int(segs[0, 0]), int(segs[-1, 0] + segs[-1, 1] * segs[-1, 2])


def _code(delta: np.ndarray, segs: np.ndarray, level: int, width: int) -> bytes:
    if level == LEVEL_FAST:
        return fast.kernel().encode(delta, segs, width, 0, 0)
    return encode_int_block(delta, segs)


def _prepare(data: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    data, base = np.asarray(data), np.asarray(base)
    if data.dtype != base.dtype or data.size != base.size:
        raise MismatchError(
            f"delta: the base ({base.dtype}, {base.size} values) does not match the tensor "
            f"({data.dtype}, {data.size} values)"
        )
    is_float = float_format(data.dtype) is not None
    return as_uint(data), as_uint(base), is_float


def _check_level(level: object) -> int:
    if level not in BLOCK_VALUES or isinstance(level, bool):
        raise StreamError(f"delta: level must be one of {sorted(BLOCK_VALUES)}, not {level!r}")
    return int(level)  # type: ignore[call-overload]


def encode(
    data: np.ndarray, base: np.ndarray, shape: tuple[int, ...], level: int, jobs: int = 1
) -> tuple[dict, list[bytes]]:
    """``meta`` (JSON-able, for the stream header) and the independent blocks of ``data`` coded
    against ``base`` (same dtype and size) at the float prior's ``level`` (1 fast, 2 highest)."""
    level = _check_level(level)
    new, old, is_float = _prepare(data, base)
    if math.prod(shape) != new.size:
        shape = (new.size,)
    width = 8 * new.dtype.itemsize
    cuts, _ = segments(shape, None, BLOCK_VALUES[level])
    o_new, o_old = _ordered(new, is_float), _ordered(old, is_float)

    def one(block: Sequence[tuple[int, int, int]]) -> bytes:
        segs = seg_array(block)
        lo, hi = _span(segs)
        rel = segs.copy()
        rel[:, 0] -= lo
        ulp = o_new[lo:hi] - o_old[lo:hi]
        if level == LEVEL_FAST:
            ulp = _zigzag(ulp)
        xor = new[lo:hi] ^ old[lo:hi]
        coded = [_code(ulp, rel, level, width), _code(xor, rel, level, width)]
        kind = ULP if len(coded[ULP]) <= len(coded[XOR]) else XOR
        return _HEAD.pack(kind, _digest(new[lo:hi])) + coded[kind]

    meta = {"model": "delta", "version": VERSION, "level": level, "shape": list(shape)}
    return meta, map_ordered(one, cuts, jobs)


def decode(
    meta: Mapping[str, Any],
    blocks: Sequence[bytes],
    base: np.ndarray,
    dtype: np.dtype,
    shape: tuple[int, ...],
    jobs: int = 1,
) -> np.ndarray:
    """The tensor :func:`encode` coded (flat, like ``decode_array``), from its blocks and the same
    ``base``; StreamError for
    a damaged stream, ChecksumError when the values decoded are not the ones coded (a damaged
    block or another base)."""
    dtype = np.dtype(dtype)
    try:
        part_shape = tuple(int(n) for n in meta["shape"])
        level, version, model = meta["level"], meta["version"], meta["model"]
    except (KeyError, TypeError, ValueError) as exc:
        raise StreamError(f"delta: bad part metadata: {exc}") from None
    if model != "delta" or version != VERSION:
        raise StreamError(f"delta: blocks of model {model!r} version {version!r}, not {VERSION}")
    level = _check_level(level)
    n = math.prod(shape)
    if math.prod(part_shape) != n or any(k < 0 for k in part_shape):
        raise StreamError("delta: part shape does not match its element count")
    old = as_uint(np.asarray(base))
    if np.asarray(base).dtype != dtype or old.size != n:
        raise MismatchError(
            f"delta: the base ({np.asarray(base).dtype}, {old.size} values) does not match the "
            f"stream's tensor ({dtype}, {n} values)"
        )
    is_float = float_format(dtype) is not None
    o_old = _ordered(old, is_float)
    cuts, _ = segments(part_shape, None, BLOCK_VALUES[level])
    if len(cuts) != len(blocks):
        raise StreamError(f"delta: {len(blocks)} blocks where the shape needs {len(cuts)}")
    out = np.empty(n, dtype=old.dtype)
    width = 8 * old.dtype.itemsize

    def one(item: tuple[int, tuple[bytes, Sequence[tuple[int, int, int]]]]) -> None:
        index, (block, cut) = item
        segs = seg_array(cut)
        lo, hi = _span(segs)
        rel = segs.copy()
        rel[:, 0] -= lo
        if len(block) < _HEAD.size or block[0] not in (ULP, XOR):
            raise StreamError(f"delta: block {index} has a bad header")
        kind, digest = _HEAD.unpack_from(block)
        body = block[_HEAD.size :]
        delta = np.zeros(hi - lo, dtype=old.dtype)
        try:
            if level == LEVEL_FAST:
                fast.kernel().decode(body, delta, rel, width, 0, 0)
            else:
                decode_int_block(body, delta, rel)
        except ValueError as err:  # the kernels' damaged-input errors (and StreamError)
            raise StreamError(f"delta: block {index} is damaged: {err}") from None
        if kind == XOR:
            values = old[lo:hi] ^ delta
        else:
            if level == LEVEL_FAST:
                delta = _unzigzag(delta)
            values = _unordered(o_old[lo:hi] + delta, is_float)
        if _digest(values) != digest:
            raise ChecksumError(
                f"delta: block {index} decodes to values that do not match its checksum: the "
                "stream is damaged or the base is not the one it was coded against"
            )
        out[lo:hi] = values

    map_ordered(one, list(enumerate(zip(blocks, cuts, strict=True))), jobs)
    return from_uint(out, dtype)
