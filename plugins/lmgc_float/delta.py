"""Code a tensor against a reference of the same shape and dtype (a checkpoint against the one
before it, a fine-tune against its base), losslessly for every bit pattern.

Why a delta: over a few hundred training steps most weights move by a few hundred ulps, and by
about the same amount in absolute terms (Adam normalises its steps), so the difference of the two
bit patterns, read as ordered integers, is short and its length is predicted by the base value's
exponent. Each block keeps whichever of three codings is smallest:

* *ulp distance*: both values mapped to ordered integers (sign-magnitude to a monotone unsigned
  integer, so ``-0.0`` and ``+0.0`` are neighbours), then the wrapping difference; integers: the
  wrapping difference of their raw bits;
* *XOR* of the raw bits (what ZipNN and BitX do), better where values are replaced (its field
  model codes a changed sign bit as a long XOR, so a sign flip gains nothing over *alone*);
* *alone*: the block coded by the float prior as if there were no base (Adam's ``exp_avg`` is
  mostly new after a few dozen steps).

The delta's fields (changed or not, sign, bit length, top bits, raw rest) are modelled in the
compiled kernel ``_delta_kernels.c``: level 1 semi-static with interleaved rANS, level 2 an
adaptive context model. Blocks are the float prior's segments (whole rows), independent, and each
ends with a 128-bit checksum of the *decoded values*, so a damaged block or another base is caught
without a hash of the whole array.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from lmgc_core.util.errors import ChecksumError, MismatchError, PluginError, StreamError
from lmgc_core.util.parallel import map_ordered

from . import fast
from .codec import decode_float_block, encode_float_block, seg_array
from .formats import FloatFormat, as_uint, float_format, from_uint, segments
from .int_codec import decode_int_block, encode_int_block

VERSION = 3
"""The kernel's ``DELTA_VERSION`` this code expects, recorded in ``meta``."""
DECODES = (2, 3)
"""Every ``meta`` version whose blocks decode: version 3's blocks end with XXH3-128 of their
values (~4x faster to check), version 2's with MurmurHash3_x64_128; the bytes are otherwise the
same."""
LEVEL_FAST, LEVEL_MAX = 1, 2
BLOCK_VALUES = {LEVEL_FAST: 1 << 18, LEVEL_MAX: 1 << 20}
"""Values per block, as the float prior's levels use."""
ULP, XOR, ALONE = 0, 1, 2
"""A block's first byte: how it is coded."""
TRY_BOTH = 1.03
"""Level 2 codes the second-best transform too when its estimate is within this factor."""


@functools.cache
def kernel() -> ModuleType:
    """The compiled delta kernel; PluginError when it is missing or stale."""
    try:
        from . import _delta_kernels as k  # type: ignore[attr-defined]
    except ImportError as err:
        raise PluginError(
            "the float prior's delta model needs its compiled kernel (lmgc_float._delta_kernels):"
            " it was not built when lmgc was installed (it is optional, so a failed compile "
            f"only warned: `pip install -v lmgc` shows why) ({err})"
        ) from None
    if k.DELTA_VERSION != VERSION:
        raise PluginError(
            f"lmgc_float._delta_kernels is version {k.DELTA_VERSION}, this code needs {VERSION}:"
            " rebuild it with `pip install -e .` (or reinstall lmgc)"
        )
    return k


def _layout(fmt: FloatFormat | None, width: int) -> tuple[int, int, int]:
    """(width, exponent bits, mantissa bits); no exponent for integers."""
    return (width, fmt.exponent_bits, fmt.mantissa_bits) if fmt else (width, 0, 0)


@functools.lru_cache(maxsize=64)
def _cut_arrays(shape: tuple[int, ...], level: int) -> tuple[np.ndarray, ...]:
    """The (offset, rows, cols) int64 segments of each block of a part, read-only; cached:
    a checkpoint's tensors repeat a few shapes, and a small tensor's decode is otherwise
    mostly this Python."""
    cuts, _ = segments(shape, None, BLOCK_VALUES[level])
    arrays = tuple(seg_array(cut) for cut in cuts)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _check_level(level: object) -> int:
    if isinstance(level, bool) or level not in BLOCK_VALUES:
        raise StreamError(f"delta: level must be one of {sorted(BLOCK_VALUES)}, not {level!r}")
    return int(level)  # type: ignore[call-overload]


def _encode_alone(
    new: np.ndarray,
    segs: np.ndarray,
    fmt: FloatFormat | None,
    level: int,
    layout: tuple[int, int, int],
) -> bytes:
    """The block without its base: the fast level's block (with its own checksum of the
    values), or the adaptive model's followed by the kernel's checksum."""
    if level == LEVEL_FAST:
        return fast.kernel().encode(new, segs, *layout)
    body = encode_float_block(new, segs, fmt) if fmt else encode_int_block(new, segs)
    return body + kernel().checksum(new, segs, layout[0], True)


def encode(
    data: np.ndarray, base: np.ndarray, shape: tuple[int, ...], level: int, jobs: int = 1
) -> tuple[dict, list[bytes]]:
    """``meta`` (JSON-able, for the stream header) and the independent blocks of ``data`` coded
    against ``base`` (same dtype and size) at the float prior's ``level`` (1 fast, 2 highest)."""
    level = _check_level(level)
    data, base = np.asarray(data), np.asarray(base)
    if data.dtype != base.dtype or data.size != base.size:
        raise MismatchError(
            f"delta: the base ({base.dtype}, {base.size} values) does not match the tensor "
            f"({data.dtype}, {data.size} values)"
        )
    new, old = as_uint(data), as_uint(base)
    if math.prod(shape) != new.size:
        shape = (new.size,)
    fmt = float_format(data.dtype)
    layout = _layout(fmt, 8 * new.dtype.itemsize)
    cuts = _cut_arrays(tuple(int(d) for d in shape), level)
    k = kernel()

    def one(segs: np.ndarray) -> bytes:
        costs = k.estimate(new, old, segs, *layout)
        order = sorted(range(3), key=lambda t: costs[t])
        tries = order[:1]
        if level == LEVEL_MAX and costs[order[1]] <= TRY_BOTH * costs[order[0]]:
            tries = order[:2]
        coded = []
        for kind in tries:
            if kind == ALONE:
                body = _encode_alone(new, segs, fmt, level, layout)
            else:
                body = k.encode(new, old, segs, *layout, level, kind)
            coded.append(bytes([kind]) + body)
        return min(coded, key=len)

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
    ``base``; StreamError for a damaged stream, ChecksumError when the values decoded are not the
    ones coded (a damaged block or another base), MismatchError for a base of another dtype or
    size."""
    dtype = np.dtype(dtype)
    try:
        part_shape = tuple(int(n) for n in meta["shape"])
        level, version, model = meta["level"], meta["version"], meta["model"]
    except (KeyError, TypeError, ValueError) as exc:
        raise StreamError(f"delta: bad part metadata: {exc}") from None
    if model != "delta" or isinstance(version, bool) or version not in DECODES:
        raise StreamError(
            f"delta: blocks of model {model!r} version {version!r}, not one of {list(DECODES)}"
        )
    xxh3 = version >= 3
    level = _check_level(level)
    n = math.prod(shape)
    if math.prod(part_shape) != n or any(k < 0 for k in part_shape):
        raise StreamError("delta: part shape does not match its element count")
    base = np.asarray(base)
    if base.dtype != dtype or base.size != n:
        raise MismatchError(
            f"delta: the base ({base.dtype}, {base.size} values) does not match the stream's "
            f"tensor ({dtype}, {n} values)"
        )
    old = as_uint(base)
    fmt = float_format(dtype)
    layout = _layout(fmt, 8 * old.dtype.itemsize)
    cuts = _cut_arrays(part_shape, level)
    if len(cuts) != len(blocks):
        raise StreamError(f"delta: {len(blocks)} blocks where the shape needs {len(cuts)}")
    out = np.empty(n, dtype=old.dtype)  # every block writes all its values, then checks them
    k = kernel()

    def one(item: tuple[int, tuple[bytes, np.ndarray]]) -> None:
        index, (block, segs) = item
        if not block or block[0] not in (ULP, XOR, ALONE):
            raise StreamError(f"delta: block {index} has an unknown kind")
        kind, body = block[0], memoryview(block)[1:]  # no copy of the block
        try:
            if kind != ALONE:
                k.decode(body, out, old, segs, *layout, level, kind, xxh3)
            elif level == LEVEL_FAST:  # a delta part's CRC32s are always checked: no
                fast.kernel().decode(body, out, segs, *layout, canonical=False)  # 2nd check
            else:
                _decode_alone(body, out, segs, fmt, layout[0], index, xxh3)
        except ValueError as err:  # the kernels' damaged-input errors (and StreamError)
            if isinstance(err, ChecksumError) or str(err) == k.CHECKSUM_MISMATCH:
                raise ChecksumError(
                    f"delta: block {index} decodes to values that do not match its checksum: "
                    "the stream is damaged or the base is not the one it was coded against"
                ) from None
            raise StreamError(f"delta: block {index} is damaged: {err}") from None

    map_ordered(one, list(enumerate(zip(blocks, cuts, strict=True))), jobs)
    return from_uint(out, dtype)


def _decode_alone(
    body: bytes | memoryview,
    out: np.ndarray,
    segs: np.ndarray,
    fmt: FloatFormat | None,
    width: int,
    index: int,
    xxh3: bool,
) -> None:
    digest = kernel().DIGEST
    if len(body) <= digest:
        raise StreamError(f"delta: block {index} is too short")
    lo, hi = int(segs[0, 0]), int(segs[-1, 0] + segs[-1, 1] * segs[-1, 2])
    out[lo:hi] = 0  # the adaptive decoders fill in only what they code
    coded = body[:-digest]
    if fmt:
        decode_float_block(coded, out, segs, fmt)
    else:
        decode_int_block(coded, out, segs)
    if kernel().checksum(out, segs, width, xxh3) != bytes(body[-digest:]):
        raise ChecksumError(f"delta: block {index} does not match its checksum")
