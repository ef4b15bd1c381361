"""The ``float`` prior: a float-structured, shape-aware model with a fast array path.

Used by a pipeline, it codes each part as a whole
(:class:`~lmgc_core.components.interfaces.ArrayCoding`):
floats through the field model of :mod:`.codec`, integers (quantize indices, masks, any other
fixed-size item viewed as unsigned integers) through the level and repeat models of
:mod:`.int_codec` (kernels: ``_float_kernels.c``). As an expert for
symbol-level priors (a mixture with a language model) it also offers a hex-digit session
(:mod:`.digits`) built from the same field decomposition.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from lmgc_core.components.interfaces import JSON, ArrayCoding, DeltaCoding, Prior, PriorSession
from lmgc_core.util.errors import ConfigError, PluginError, StreamError

from . import codec, delta, fast
from .formats import as_uint, check_layout, float_format, from_uint, segments, uint_dtype

VERSION = 1
BLOCK_VALUES = 1 << 20
"""Values per independently coded block: big enough that model learning is amortised, small
enough that a 100 MB tensor gives dozens of blocks for the cores."""
LEVEL_FAST = 1
"""Semi-static fields and interleaved rANS (:mod:`.fast`): decodes at memory-copy-like speed. The
default of a new prior; its streams record ``"level": 1``, so no later default reinterprets them."""
LEVEL_MAX = 2
"""Today's adaptive context model (:mod:`.codec`). A stream whose header has no ``level`` was made
at this level (the default before levels, and until the fast level became it), so
:meth:`FloatPrior.get_config` leaves it out there and a recorded config without one rebuilds at
it (``recorded_defaults``, applied by :func:`lmgc_core.components.registry.recorded`)."""
LEVELS = (LEVEL_FAST, LEVEL_MAX)
FAST_BLOCK_VALUES = 1 << 18
"""The fast level's default block: its frequency tables are per block, and smaller blocks follow
the tensors' changing statistics (PP-OCRv4 bf16 weights: 67.3 % at 2^18 values against 68.0 % at
2^20) at no cost in speed; they also give more blocks for the cores."""
SMALL_PARTS = ("level", "smaller")
"""How a level-1 prior codes a small part: ``"level"`` at level 1 like any other (every stream
made before the choice existed), ``"smaller"`` at both levels, keeping level 2 where it is
clearly smaller (:data:`SMALL_GAIN`; the default of a new level-1 prior: on a few thousand values
the adaptive model's learning beats the fast level's stored tables by 6-12 %)."""
SMALL_GAIN = 32
"""A small part stays at level 2 only where that saves at least 1/SMALL_GAIN (~3 %) of its level-1
bytes: level 2 decodes ~30x slower (ConvNet gradients, four snapshots of 15,338 values: 1.1 %
smaller at 57 against 1,976 MB/s, slower than pcodec and ZipNN), and the fast level is the one a
user picks for speed. Only the encoder's choice: every stream decodes either way."""
SMALL_VALUES = 1 << 15
"""Parts of at most this many values are small (a 64 KB Zarr chunk of float32 is 2^14 values):
coding them twice costs at most ~1.5 ms (level 2 codes ~90 MB/s). Above it level 2 was clearly
smaller on none of 59 real tensors of 2^15 to 2^16 values (``benchmarks/small_parts.py``: it
saves 0.38 % in the median, 1.65 % at most), while the second encode cut those parts' encode
speed ~3x (ConvNet gradients, 61,352 values: 68 against pcodec's 147 MB/s); below it, on 17 of
91 (and on 28,672 values of the MLP's gradients: 3.7 %, ``test_small_parts``)."""
DELTA_SMALL_VALUES = 1 << 12
"""The same for a delta (``encode_delta``), smaller: a level-2 delta decodes ~30x slower than a
level-1 one (44 against 1,400 MB/s) and saves little on thousands of values (a 256 x 256 weight
against the previous checkpoint: 1.4 %), so at 2^16 values the level-2 deltas of a checkpoint's
small tensors (11 % of its bytes) took half of its decode time (issue 21's speed target). Below
2^12 values level 2 still saves 7-20 % and costs at most ~0.4 ms per part."""

SELF_CHECKED_BLOCKS = False
"""Whether a level-1 block's own value checksum stands in for its CRC32 on decoding. Off: the
fast kernel refuses every changed byte of a block (test_fast_canonical.py flips every bit), but
a block's checksum covers only its own values, not where they go, so two blocks of equal length
swapped in a stream decoded without an error into the wrong places (found 2026-12-05). The
CRC32s the header lists bind each block to its position; the float prior checks them with its
PCLMULQDQ CRC-32 (~12 GB/s, :attr:`FloatPrior.block_crc32`), and the kernel then leaves out its
canonical checks, which would repeat the CRC32 (:meth:`FloatPrior.checks_own_blocks`). Since
fast_version 7 a part of 64 KB or more records ``block_sums`` (:func:`fast.block_sums`), the
list of its blocks' checksums, in the CRC-checked header: that binds each block to its place
and stream, so such a part is decoded without its CRC32s and without the canonical checks."""


class FloatPrior(Prior, ArrayCoding, DeltaCoding):
    name = "float"
    thread_safe = True
    default_window = 512  # digit path only: the model ignores windows beyond their cut
    default_batch_size = 16384
    recorded_defaults: ClassVar[dict[str, Any]] = {"level": LEVEL_MAX, "small_parts": "level"}
    """A header without ``level`` means the highest level, forever (see :data:`LEVEL_MAX`), while
    a new prior built without one is fast (:data:`LEVEL_FAST`); one without ``small_parts`` coded
    every part at its level, while a new level-1 prior keeps the smaller of both levels."""

    def __init__(
        self,
        layout: Sequence[Any] | None = None,
        block_values: int | None = None,
        level: int = LEVEL_FAST,
        small_parts: str | None = None,
    ):
        if not isinstance(level, int) or isinstance(level, bool) or level not in LEVELS:
            raise ConfigError(f"float prior: level must be one of {list(LEVELS)}, not {level!r}")
        if small_parts is not None and small_parts not in SMALL_PARTS:
            raise ConfigError(
                f"float prior: small_parts must be one of {list(SMALL_PARTS)}, not {small_parts!r}"
            )
        self.level = level
        # level 2 already codes every part at the highest level: nothing to choose
        self.small_parts = "smaller" if small_parts != "level" and level == LEVEL_FAST else "level"
        self.layout = check_layout(layout)
        self._default_blocks = block_values is None  # a stream's own size is then accepted
        if block_values is None:
            block_values = FAST_BLOCK_VALUES if level == LEVEL_FAST else BLOCK_VALUES
        if (
            not isinstance(block_values, int)
            or isinstance(block_values, bool)
            or not 1 <= block_values <= 1 << 28
        ):
            raise ConfigError(
                f"block_values must be an integer in [1, 2**28], not {block_values!r}"
            )
        self.block_values = block_values

    def get_config(self) -> JSON:
        layout = None if self.layout is None else [list(s) for s in self.layout]
        config: dict[str, Any] = {"layout": layout, "block_values": self.block_values}
        if self.level != LEVEL_MAX:  # streams without a level keep meaning the highest
            config["level"] = self.level
        if self.small_parts != "level":  # nor does one without small_parts change meaning
            config["small_parts"] = self.small_parts
        return config

    def check_fingerprint(self, recorded: Mapping[str, Any]) -> None:
        """``small_parts`` only chooses how the encoder codes a part (the part's ``meta`` names
        the level it chose), so a stream decodes whatever it says there."""
        rest = {k: v for k, v in recorded.items() if k != "small_parts"}
        mine = self.get_config().get("small_parts")
        super().check_fingerprint(rest if mine is None else {**rest, "small_parts": mine})

    def fingerprint(self) -> JSON:
        fp: dict[str, Any] = {"prior": "float", "version": VERSION, **self.get_config()}
        if self.level == LEVEL_FAST:
            fp["fast_version"] = fast.FAST_VERSION
        return fp

    @functools.cached_property
    def value_checksum(self) -> str | None:
        """The fast level checks every block's values against a checksum in the block, so its
        streams need no SHA-256 of the whole array (see :meth:`Pipeline.compress`). Looked up
        once per prior (its level never changes): every decode asks."""
        if self.level != LEVEL_FAST:
            return None

        return fast.BLOCK_CHECKSUM

    @functools.cached_property
    def value_checksums(self) -> tuple[str, ...]:
        """The older :attr:`value_checksum` names whose streams the fast level still reads (each
        block names its checksum: the kernel checks whichever it carries)."""
        if self.level != LEVEL_FAST:
            return ()

        return fast.OLD_BLOCK_CHECKSUMS

    def checks_own_blocks(self, meta: Mapping[str, Any]) -> bool:
        """Whether decoding a part with ``meta`` catches every block that is not the one the
        header lists at its place, so the container may leave their CRC32s unchecked (see "What
        checks what" in docs/format.md): level-1 parts that record :data:`fast.BLOCK_SUMS` (every
        block's values checked against its checksum, the checksums against the header's list),
        or, with :data:`SELF_CHECKED_BLOCKS`, any level-1 part under the kernel's canonical
        checks; never level-2 blocks (their range coder ignores bits)."""
        if self.level != LEVEL_FAST or meta.get("level", self.level) != LEVEL_FAST:
            return False

        return fast.BLOCK_SUMS in meta or SELF_CHECKED_BLOCKS

    @property
    def block_crc32(self) -> Any:
        """zlib's CRC-32 computed by the delta kernel (PCLMULQDQ: ~12 against 2.4 GB/s), for the
        container's check of the blocks no decoder checks itself (delta and level-2 blocks);
        ``None`` (zlib's) without that kernel."""
        return _kernel_crc32()

    def checks_delta_values(self, meta: Mapping[str, Any]) -> bool:
        """Whether decoding a delta part with ``meta`` checks every value it writes against a
        checksum in its block (every delta block of meta version 2 ends with the 128-bit
        checksum of its values, at both levels and for each kind; XXH3-128 since version 3), so
        the pipeline needs no SHA-256 of the whole array on top (see "What checks what" in
        docs/format.md)."""

        version = meta.get("version")
        return (
            meta.get("model") == "delta"
            and not isinstance(version, bool)
            and (version in delta.DECODES)
        )

    def for_stream(self, recorded: Mapping[str, Any]) -> Prior:
        """The prior at the level the stream records (a stream decodes without being told its
        level); every other setting must match as usual."""
        level = recorded.get("level", LEVEL_MAX) if isinstance(recorded, Mapping) else None
        if level == LEVEL_FAST:  # older fast-level streams keep decoding
            recorded = fast.readable(recorded)
        if level != self.level and level in LEVELS and not isinstance(level, bool):
            blocks = recorded.get("block_values") if self._default_blocks else self.block_values
            try:
                other = FloatPrior(self.get_config()["layout"], blocks, level)
            except ConfigError:
                other = FloatPrior(self.get_config()["layout"], self.block_values, level)
            other.check_fingerprint(recorded)
            return other
        self.check_fingerprint(recorded)
        return self

    # -- array path ------------------------------------------------------------------------------
    def encode_array(
        self, data: np.ndarray, shape: tuple[int, ...], jobs: int = 1
    ) -> tuple[JSON, list[bytes]]:
        data = np.ascontiguousarray(data).reshape(-1)
        if math.prod(shape) != data.size:
            shape = (data.size,)
        fmt = float_format(data.dtype)
        blocks, used = segments(shape, self.layout, self.block_values)
        bits = as_uint(data)
        meta: dict[str, Any] = {
            "model": "float" if fmt else "int",
            "shape": list(shape),
            "layout": used,
        }

        if self.level != LEVEL_FAST:
            coded = codec.encode_blocks(bits, blocks, fmt, jobs)
        else:
            if fmt is None:  # integers: byte planes, never split
                coded = fast.encode_blocks(bits, blocks, fmt, jobs)
            else:
                coded, splits = fast.encode_split_blocks(bits, blocks, fmt, jobs)
                if splits:  # absent: the blocks of the shape's cut
                    meta["splits"] = splits
        if self.small_parts == "smaller" and 0 < data.size <= SMALL_VALUES:
            highest = _encode_checked(bits, blocks, fmt, jobs)
            if _clearly_smaller(highest, coded):
                meta.pop("splits", None)
                meta["level"] = LEVEL_MAX  # absent: the stream's level
                coded = highest
        if meta.get("level", self.level) == LEVEL_FAST and sum(map(len, coded)) >= (
            fast.BLOCK_SUMS_BYTES
        ):
            meta[fast.BLOCK_SUMS] = fast.block_sums(coded)
        return meta, coded

    def decode_array(
        self,
        meta: Mapping[str, Any],
        blocks: Sequence[bytes],
        dtype: np.dtype,
        shape: tuple[int, ...],
        jobs: int = 1,
    ) -> np.ndarray:
        dtype = np.dtype(dtype)
        try:
            part_shape = tuple(map(int, meta["shape"]))
            model = meta["model"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"float prior: bad part metadata: {exc}") from None
        if math.prod(part_shape) != math.prod(shape) or min(part_shape, default=0) < 0:
            raise StreamError("float prior: part shape does not match its element count")
        fmt = float_format(dtype)
        if model != ("float" if fmt else "int"):
            raise StreamError(f"float prior: part coded with the {model!r} model, dtype {dtype}")
        level = meta.get("level", self.level)  # a small part's own level (small_parts)
        if level != self.level and (self.level, level) != (LEVEL_FAST, LEVEL_MAX):
            raise StreamError(f"float prior: a part of a level-{self.level} stream at {level!r}")
        if level == LEVEL_FAST:  # its blocks' segments as arrays, remembered (fast.block_arrays)
            cuts: Sequence[Any] = fast.block_arrays(
                part_shape, self.layout, self.block_values, meta.get("splits", fast.NO_SPLITS)
            )
        else:
            cuts, _ = segments(part_shape, self.layout, self.block_values)
            if "splits" in meta:  # only a level-1 part's encoder cuts blocks further
                raise StreamError("float prior: block splits in a part not coded at level 1")
        if len(cuts) != len(blocks):
            raise StreamError(
                f"float prior: {len(blocks)} blocks where the shape needs {len(cuts)}"
            )
        # the fast kernel writes every value (and checks them against its checksums): no zeroing
        alloc = np.empty if level == LEVEL_FAST else np.zeros
        out = alloc(math.prod(part_shape), dtype=uint_dtype(dtype.itemsize))
        if level != self.level:
            _decode_checked(blocks, out, cuts, fmt, jobs)
        elif level == LEVEL_FAST:
            listed = fast.BLOCK_SUMS in meta
            # canonical checks only where nothing else binds the blocks (their CRC32s unchecked)
            canonical = not listed and self.checks_own_blocks(meta)
            fast.decode_blocks(blocks, out, cuts, fmt, jobs, canonical=canonical)
            if listed:
                fast.check_block_sums(blocks, meta[fast.BLOCK_SUMS])
        else:
            codec.decode_blocks(blocks, out, cuts, fmt, jobs)
        return from_uint(out, dtype)

    # -- delta path (a tensor against its reference) ---------------------------------------------
    def encode_delta(
        self, data: np.ndarray, base: np.ndarray, shape: tuple[int, ...], jobs: int = 1
    ) -> tuple[JSON, list[bytes]]:

        meta, coded = delta.encode(data, base, shape, self.level, jobs)
        if self.small_parts == "smaller" and 0 < np.size(data) <= DELTA_SMALL_VALUES:
            other, highest = delta.encode(data, base, shape, LEVEL_MAX, jobs)
            if _clearly_smaller(highest, coded):  # meta names its level
                return other, highest
        return meta, coded

    def decode_delta(
        self,
        meta: Mapping[str, Any],
        blocks: Sequence[bytes],
        base: np.ndarray,
        dtype: np.dtype,
        shape: tuple[int, ...],
        jobs: int = 1,
    ) -> np.ndarray:
        """The level comes from ``meta`` (the stream's), whatever this prior's level."""

        return delta.decode(meta, blocks, base, dtype, shape, jobs)

    # -- digit path (expert for symbol-level priors) --------------------------------------------
    def open(
        self,
        alphabet: Sequence[bytes],
        batch_size: int,
        window: int,
        pattern: Sequence[int] = (-1,),
    ) -> PriorSession:
        from .digits import DigitSession

        if len(alphabet) > 32:
            raise ConfigError(
                "the float prior's digit path models hex digits: use the hex serializer "
                f"(this alphabet has {len(alphabet)} symbols)"
            )
        return DigitSession(alphabet, batch_size, pattern)


@functools.cache
def _kernel_crc32() -> Any:
    """The delta kernel's ``crc32`` (looked up once: every decode asks), ``None`` without it."""

    try:
        return getattr(delta.kernel(), "crc32", None)
    except PluginError:
        return None


# -- a small part at the highest level inside a level-1 stream (small_parts) --------------------
def _clearly_smaller(highest: Sequence[bytes], fast: Sequence[bytes]) -> bool:
    """Whether level 2's blocks save at least 1/SMALL_GAIN of level 1's bytes."""
    return sum(map(len, highest)) * SMALL_GAIN < sum(map(len, fast)) * (SMALL_GAIN - 1)


def _encode_checked(
    bits: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]],
    fmt: Any,
    jobs: int,
) -> list[bytes]:
    """Level-2 blocks, each followed by the 128-bit checksum of its values that every level-1
    block carries (a level-1 stream has no SHA-256 of the whole array to fall back on)."""

    width = 8 * bits.dtype.itemsize
    coded = codec.encode_blocks(bits, blocks, fmt, jobs)
    check = delta.kernel().checksum
    return [c + check(bits, codec.seg_array(b), width) for c, b in zip(coded, blocks, strict=True)]


def _decode_checked(
    data: Sequence[bytes],
    out: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]],
    fmt: Any,
    jobs: int,
) -> None:
    """Decode what :func:`_encode_checked` wrote into ``out`` (zeroed) and check every block's
    values against its checksum (ChecksumError when they differ)."""
    from lmgc_core.util.errors import ChecksumError

    digest, width = delta.kernel().DIGEST, 8 * out.dtype.itemsize
    if any(len(block) <= digest for block in data):
        raise StreamError("float prior: a level-2 block of a small part is too short")
    codec.decode_blocks([block[:-digest] for block in data], out, blocks, fmt, jobs)
    for index, (block, cut) in enumerate(zip(data, blocks, strict=True)):
        if delta.kernel().checksum(out, codec.seg_array(cut), width) != block[-digest:]:
            raise ChecksumError(
                f"float prior: block {index} of a small part (level 2) decodes to values that "
                "do not match its checksum: the stream is corrupted"
            )
