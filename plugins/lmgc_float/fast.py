"""The float prior's fast level: blocks coded by the compiled kernel ``_fast_kernels.c``.

Each block is coded semi-statically (pass 1: per-row / per-column side information and one
frequency table per field; pass 2: interleaved rANS), so decoding is table lookups and byte
copies instead of an adaptive model per bit. Blocks are independent and the kernel releases the
GIL, so blocks code on several threads; the bytes do not depend on the thread count.

Every block ends with a 128-bit checksum of its values (XXH3-128 since version 4, ~4x faster than
the MurmurHash3_x64_128 of older blocks), which the kernel checks while it rebuilds the block's
rows, each still in cache: a level-1 stream without stages needs no SHA-256 of the whole array
(see :data:`BLOCK_CHECKSUM`).

A block whose tensors' statistics differ (one frequency table would serve them badly) is cut
by the encoder into runs of its segments, each an ordinary block (:func:`encode_split_blocks`);
the part's metadata lists where (``splits``), and decoding regroups the segments the same way
(:func:`regroup`).

There is no numba twin: without a C compiler the fast level is unavailable and says so.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from lmgc_core.stream.container import MAX_BLOCKS
from lmgc_core.util.caches import drop_oldest
from lmgc_core.util.errors import ChecksumError, PluginError, StreamError
from lmgc_core.util.parallel import map_ordered

from .codec import seg_array
from .formats import CACHED_SEGMENTS, FloatFormat, segments

FAST_VERSION = 9
"""The kernel's ``FAST_VERSION`` this code expects (and records in stream headers)."""
DECODES = (2, 3, 4, 5, 6, 7, 8, 9)
"""Every ``fast_version`` whose streams the kernel decodes (each block names its layout, its
checksum and its table's scale: version 2 codes the exponent and the sign / top mantissa bits as
two symbols, version 3 as one; version 4 is version 3 with XXH3-128 as the blocks' checksum;
version 5 is version 4 with each block's symbol table at the scale it chose, 2^11 to 2^15;
version 6 is version 5 with a block of many values interleaving 64 or 128 rANS states instead
of 32, for decoding speed; version 7 is version 6 with a part of many bytes recording
:data:`BLOCK_SUMS`; version 8 is version 7 whose encoder takes a block's coarser table where it
costs at most 2^-8 of the block's bytes instead of 2^-10: the same layout, decoded faster;
version 9 is version 8 whose segments may pack their row / column means as Rice codes, where that
is shorter than varints: ~0.4 % smaller on small tensors)."""
BLOCK_SUMS = "block_sums"
"""The part metadata key (fast_version 7) of :func:`block_sums`: the header is CRC-checked, so it
binds every block to its place and to its stream, which the blocks' CRC32s did; a part that
records it is decoded without them (~25 GB/s: 5-13 % of a level-1 decode)."""
BLOCK_SUMS_BYTES = 1 << 16
"""Parts whose blocks are smaller in all keep their CRC32s instead: there the ~30 bytes of
:data:`BLOCK_SUMS` in the header would cost more than the CRC32s' time is worth."""
BLOCK_CHECKSUM = "blocks-xxh3-128"
"""The header's ``checksum`` for a stream whose every block carries the checksum of its values
(instead of a ``sha256`` of the whole array): XXH3-128, ``xxhash.xxh3_128_digest`` of the
block's values as little-endian bytes."""
OLD_BLOCK_CHECKSUMS = ("blocks-murmur3-x64-128",)
"""The same for streams of versions 2 and 3 (their blocks carry MurmurHash3_x64_128), read."""


def block_sums(blocks: Sequence[bytes]) -> str:
    """The first 8 bytes (hex) of XXH3-128 of the blocks' own value checksums (each block's last
    16 bytes) in stream order. Decoding checks every block's values against its checksum, and
    this list against the header: a block moved, swapped, dropped or taken from another stream
    changes the list."""
    return kernel().xxh3_128(b"".join([b[-16:] for b in blocks]))[:8].hex()


def check_block_sums(blocks: Sequence[bytes], recorded: object) -> None:
    """ChecksumError unless ``recorded`` is :func:`block_sums` of these (decoded) blocks."""
    if not isinstance(recorded, str) or block_sums(blocks) != recorded:
        raise ChecksumError(
            "float prior (fast level): the blocks' checksums are not the ones the header lists "
            "(a block is out of place, or from another stream)"
        )


@functools.cache
def kernel() -> ModuleType:
    """The compiled fast kernel; PluginError when it is missing or stale."""
    try:
        from . import _fast_kernels as k  # type: ignore[attr-defined]
    except ImportError as err:
        raise PluginError(
            "the float prior's fast level needs its compiled kernel (lmgc_float._fast_kernels): "
            "it was not built when lmgc was installed (it is optional, so a failed compile "
            "only warned: `pip install -v lmgc` shows why); level 2 (-l 2) works without it "
            f"({err})"
        ) from None
    if k.FAST_VERSION != FAST_VERSION:
        raise PluginError(
            f"lmgc_float._fast_kernels is version {k.FAST_VERSION}, this code needs "
            f"{FAST_VERSION}: rebuild it with `pip install -e .` (or reinstall lmgc)"
        )
    return k


DECODING_PATHS = {
    "zen-avx512": (True, True, True),
    "zen-avx2": (True, False, True),
    "avx512": (True, True, False),
    "avx2": (True, False, False),
    "scalar": (False, False, False),
}
"""The kernel's decoding paths, each as its ``(simd, avx512, zen)`` switches: AMD's (table
entries by scalar loads; with AVX-512 also the x86-64-v4 rebuild), AVX-512VL's renormalisation,
plain AVX2, scalar. The kernel picks one for the CPU at import; all decode the same values."""


@contextlib.contextmanager
def decoding_path(name: str) -> Iterator[bool]:
    """The kernel switched to the path ``name`` of :data:`DECODING_PATHS` for the block (for
    tests that compare paths, and benchmarks); yields False where the CPU or build lacks it
    (the scalar path is always there). Process-wide: not for use beside other decodes. The
    previous switches come back afterwards."""
    k = kernel()
    simd, wide, zen = DECODING_PATHS[name]
    was = k.simd(), k.avx512(), k.zen()
    try:
        yield k.simd(simd) == simd and k.avx512(wide) == wide and k.zen(zen) == zen
    finally:
        k.simd(was[0]), k.avx512(was[1]), k.zen(was[2])


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


Segments = Sequence[tuple[int, int, int]]


def encode_split_blocks(
    bits: np.ndarray, blocks: Sequence[Segments], fmt: FloatFormat | None, jobs: int
) -> tuple[list[bytes], list[int]]:
    """:func:`encode_blocks`, each block cut where separate frequency tables pay for themselves
    (the kernel's ``encode_split``: PP-OCRv4's bfloat16 weights 66.96 -> 66.32 %): the coded
    blocks and the ``splits``, the index (counted over all of the blocks' segments) of every
    segment that starts a block the cut of ``blocks`` does not start. More blocks than a header
    could list with the splits (over ``MAX_BLOCKS // 2``: 45 G values and more) keep the plain
    cut."""
    k = kernel()
    layout = _layout(bits, fmt)
    bits = np.ascontiguousarray(bits)
    runs = map_ordered(lambda b: k.encode_split(bits, seg_array(b), *layout), blocks, jobs)
    coded: list[bytes] = []
    splits: list[int] = []
    start = 0
    for block, pieces in zip(blocks, runs, strict=True):
        at = start
        for index, (data, count) in enumerate(pieces):
            if index:
                splits.append(at)
            coded.append(data)
            at += count
        start += len(block)
    if splits and len(coded) > MAX_BLOCKS // 2:  # a header's blocks and splits stay far below
        return encode_blocks(bits, blocks, fmt, jobs), []  # its cap on JSON values
    return coded, splits


def regroup(blocks: Sequence[Segments], splits: object) -> list[Segments]:
    """``blocks`` (the part's cut) with every block also cut before each segment ``splits``
    names (what :func:`encode_split_blocks` chose); StreamError for anything it never writes:
    not a list of increasing integers, each inside a block and not at its start."""
    if (
        not isinstance(splits, list)
        or not splits
        or not all(type(s) is int for s in splits)
        or any(a >= b for a, b in itertools.pairwise(splits))
    ):
        raise StreamError("float prior (fast level): bad block splits in the part metadata")
    out: list[Segments] = []
    start = q = 0
    for block in blocks:
        end, cut = start + len(block), start
        while q < len(splits) and splits[q] < end:
            if splits[q] <= cut:  # at a block's start, or before the first
                raise StreamError("float prior (fast level): a block split outside a block")
            out.append(block[cut - start : splits[q] - start])
            cut = splits[q]
            q += 1
        out.append(block[cut - start :])
        start = end
    if q < len(splits):
        raise StreamError("float prior (fast level): a block split past the part's end")
    return out


NO_SPLITS: Any = object()
"""``splits`` of a part whose metadata has none (:func:`block_arrays`)."""
CACHED_ARRAYS = 16
""":func:`block_arrays` keeps the segments of the last this many parts' cuts (of at most
:data:`~.formats.CACHED_SEGMENTS` segments each)."""
_ARRAYS: dict[tuple[object, ...], tuple[np.ndarray, ...]] = {}


def block_arrays(
    shape: tuple[int, ...],
    layout: tuple[tuple[int, ...], ...] | None,
    block_values: int,
    splits: object = NO_SPLITS,
) -> tuple[np.ndarray, ...]:
    """The ``(offset, rows, cols)`` int64 segments (read-only) of every level-1 block of a part:
    its cut (:func:`~.formats.segments`), regrouped by the metadata's ``splits``
    (:func:`regroup`: StreamError for splits it never writes). Remembered for recent parts: a
    layout's blocks list dozens of segments, and turning them into arrays on every decode cost
    ~2 us a block (GPT's 14 blocks: ~30 us, with the regrouping). Keyed by the values
    themselves, splits only once they are a list of ints (whose equal tuples are the same)."""
    if splits is NO_SPLITS:
        key: tuple[object, ...] = (shape, layout, block_values)
    elif type(splits) is list and splits and all(type(s) is int for s in splits):
        key = (shape, layout, block_values, tuple(splits))
    else:  # refused by regroup
        return _block_arrays(shape, layout, block_values, splits)
    hit = _ARRAYS.get(key)
    if hit is not None:
        return hit
    arrays = _block_arrays(shape, layout, block_values, splits)
    if sum(len(a) for a in arrays) <= CACHED_SEGMENTS:
        drop_oldest(_ARRAYS, CACHED_ARRAYS)
        _ARRAYS[key] = arrays
    return arrays


def _block_arrays(
    shape: tuple[int, ...],
    layout: tuple[tuple[int, ...], ...] | None,
    block_values: int,
    splits: object,
) -> tuple[np.ndarray, ...]:
    cuts, _ = segments(shape, layout, block_values)
    if splits is not NO_SPLITS:
        cuts = regroup(cuts, splits)
    arrays = tuple(seg_array(cut) for cut in cuts)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def decode_blocks(
    data: Sequence[bytes],
    out_bits: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]] | Sequence[np.ndarray],
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
    repeat, at ~10-20 % of the kernel's decode time.

    ``blocks``: each block's segments, as tuples or as :func:`block_arrays` gives them."""
    k = kernel()
    width, ebits, mbits = _layout(out_bits, fmt)
    if not out_bits.flags.c_contiguous:
        raise ValueError("the fast kernel decodes into contiguous arrays")
    if len(data) != len(blocks):
        raise ValueError(f"{len(data)} blocks for {len(blocks)} segment lists")
    decode = k.decode

    def one(index: int) -> None:
        try:
            decode(data[index], out_bits, seg_array(blocks[index]), width, ebits, mbits,
                   canonical=canonical)  # fmt: skip
        except ValueError as err:
            if str(err) == k.CHECKSUM_MISMATCH:
                raise ChecksumError(
                    f"float prior (fast level): block {index} decodes to values that do not "
                    "match its checksum: the stream is corrupted or was made by another kernel"
                ) from None
            raise StreamError(
                f"float prior (fast level): block {index} is damaged: {err}"
            ) from None

    map_ordered(one, range(len(data)), jobs)
