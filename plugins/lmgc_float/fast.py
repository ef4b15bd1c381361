"""The float prior's fast level: blocks coded by the compiled kernel ``_fast_kernels.c``.

Each block is coded semi-statically (pass 1: per-row / per-column side information and one
frequency table per field; pass 2: interleaved rANS), so decoding is table lookups and byte
copies instead of an adaptive model per bit. Blocks are independent and the kernel releases the
GIL, so blocks code on several threads; the bytes do not depend on the thread count.

Every block ends with a 128-bit checksum (MurmurHash3_x64_128) of its values, which the kernel
checks right after decoding the block, while its values are still in cache: a level-1 stream
without stages needs no SHA-256 of the whole array (see :data:`BLOCK_CHECKSUM`).

There is no numba twin: without a C compiler the fast level is unavailable and says so.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from lmgc_core.util.errors import ChecksumError, PluginError, StreamError
from lmgc_core.util.parallel import map_ordered

from .codec import seg_array
from .formats import FloatFormat

FAST_VERSION = 3
"""The kernel's ``FAST_VERSION`` this code expects (and records in stream headers)."""
DECODES = (2, 3)
"""Every ``fast_version`` whose streams the kernel decodes (each block names its layout: version
2 codes the exponent and the sign / top mantissa bits as two symbols, version 3 as one)."""
BLOCK_CHECKSUM = "blocks-murmur3-x64-128"
"""The header's ``checksum`` for a stream whose every block carries the checksum of its values
(instead of a ``sha256`` of the whole array)."""


@functools.cache
def kernel() -> ModuleType:
    """The compiled fast kernel; PluginError when it is missing or stale."""
    try:
        from . import _fast_kernels as k  # type: ignore[attr-defined]
    except ImportError as err:
        raise PluginError(
            "the float prior's fast level needs its compiled kernel (lmgc_float._fast_kernels): "
            f"reinstall lmgc where a C compiler is available ({err})"
        ) from None
    if k.FAST_VERSION != FAST_VERSION:
        raise PluginError(
            f"lmgc_float._fast_kernels is version {k.FAST_VERSION}, this code needs "
            f"{FAST_VERSION}: rebuild it with `pip install -e .` (or reinstall lmgc)"
        )
    return k


def readable(recorded: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stream's recorded prior settings as this version's, when its ``fast_version`` is one
    the kernel still decodes (so the fingerprint check accepts older level-1 streams)."""
    version = recorded.get("fast_version")
    if version in DECODES and not isinstance(version, bool) and version != FAST_VERSION:
        return {**recorded, "fast_version": FAST_VERSION}
    return recorded


def _layout(bits: np.ndarray, fmt: FloatFormat | None) -> tuple[int, int, int]:
    """(width, exponent bits, mantissa bits); exponent bits 0 codes integers by byte planes."""
    width = 8 * bits.dtype.itemsize
    if fmt is None:
        return width, 0, 0
    return width, fmt.exponent_bits, fmt.mantissa_bits


def encode_blocks(
    bits: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]],
    fmt: FloatFormat | None,
    jobs: int,
) -> list[bytes]:
    """Every block of ``bits`` (native unsigned ints), on up to ``jobs`` threads."""
    k = kernel()
    layout = _layout(bits, fmt)
    bits = np.ascontiguousarray(bits)
    return map_ordered(lambda b: k.encode(bits, seg_array(b), *layout), blocks, jobs)


def decode_blocks(
    data: Sequence[bytes],
    out_bits: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]],
    fmt: FloatFormat | None,
    jobs: int,
    canonical: bool = True,
) -> None:
    """Decode every block into ``out_bits`` (contiguous; its previous contents do not matter:
    every value is written, then checked against its block's checksum). A damaged block raises
    StreamError, values that do not match their block's checksum ChecksumError.

    ``canonical``: also refuse every block the encoder would not write (the kernel's canonical
    checks), so that no changed byte decodes, even to the right values. Needed only where
    nothing else checked the blocks' bytes: the float prior turns it off for blocks whose CRC32
    the container verified (:meth:`FloatPrior.decode_array`), which the checks would only
    repeat, at ~10-20 % of the kernel's decode time."""
    k = kernel()
    layout = _layout(out_bits, fmt)
    if not out_bits.flags.c_contiguous:
        raise ValueError("the fast kernel decodes into contiguous arrays")

    def one(item: tuple[int, tuple[bytes, Sequence[tuple[int, int, int]]]]) -> None:
        index, (block, segs) = item
        try:
            k.decode(block, out_bits, seg_array(segs), *layout, canonical=canonical)
        except ValueError as err:
            if str(err) == k.CHECKSUM_MISMATCH:
                raise ChecksumError(
                    f"float prior (fast level): block {index} decodes to values that do not "
                    "match its checksum: the stream is corrupted or was made by another kernel"
                ) from None
            raise StreamError(
                f"float prior (fast level): block {index} is damaged: {err}"
            ) from None

    map_ordered(one, list(enumerate(zip(data, blocks, strict=True))), jobs)
