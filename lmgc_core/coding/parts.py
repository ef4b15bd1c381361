"""Part coders: how a pipeline turns one named 1-D part into blocks and back.

A pipeline picks its coder once, from what its prior offers, instead of asking the prior at every
step: the symbol step loop (:class:`StepCoder`, any prior), the whole-array fast path
(:class:`ArrayCoder`, a prior with :class:`ArrayCoding`) or a part against a reference of the
same dtype and shape (:class:`DeltaCoder`, a prior with :class:`DeltaCoding`). A stream's part
entry names its coding (``steps`` when absent, as in the oldest streams), and the decoder takes
the coder of that name (:func:`decoder_for`). Each coder writes exactly the part entry keys it
always wrote, so stream bytes do not depend on this split.

Never expand (format version 4): a step-coded part whose blocks would be larger than its raw
bytes is written as one stored block instead (:class:`StoredCoder`, ``"coding": "stored"``), as
zstd and xz store a block that does not compress; its decode copies the bytes and never runs the
prior. Array and delta coders keep their own blocks (the ``float`` prior stores raw blocks
itself), unless an array coding is more than :data:`ARRAY_SLACK` over the raw bytes (blocks of a
few values each): then the part is stored too.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np

from lmgc_core.coding.engine import (
    BitCounter,
    Layout,
    decoding_chooser,
    drive,
    encoding_chooser,
    unwindow,
    window_matrix,
)
from lmgc_core.coding.probability import distributions, ideal_bits
from lmgc_core.components.interfaces import (
    ArrayCoding,
    DeltaCoding,
    EntropyCoder,
    Prior,
    Serializer,
)
from lmgc_core.stream.container import block_crc32s
from lmgc_core.util.dtypes import dtype_name
from lmgc_core.util.errors import ConfigError, StreamError
from lmgc_core.util.parallel import map_ordered

Progress = Callable[[int], None]


class PartCoder(ABC):
    """One way of coding a part; ``coding`` is the name a part entry records (``None``: the
    key is left out, which means ``steps``)."""

    coding: ClassVar[str]

    def __init__(
        self,
        serializer: Serializer,
        prior: Prior,
        coder: EntropyCoder,
        window: int,
        batch: int,
    ) -> None:
        self.serializer = serializer
        self.prior = prior
        self.coder = coder
        self.window = window
        self.batch = batch

    @abstractmethod
    def encode(
        self,
        data: np.ndarray,
        shape: tuple[int, ...],
        jobs: int,
        progress: Progress | None,
        base: np.ndarray | None = None,
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The part entry's coder-specific keys and the part's blocks."""

    @abstractmethod
    def decode(
        self,
        spec: Mapping[str, Any],
        blocks: Iterator[bytes],
        dtype: np.dtype,
        count: int,
        jobs: int,
        progress: Progress | None,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """The part (flat, ``count`` items of ``dtype``), taking its blocks from ``blocks``."""

    @abstractmethod
    def estimate(
        self, data: np.ndarray, shape: tuple[int, ...], teacher_forced: bool
    ) -> tuple[float, int, str]:
        """``(bits, free symbols, method)`` for one part, without making a stream."""

    def _free(self, nbytes: int) -> int:
        """The data symbols (the pattern's ``-1`` positions) of ``nbytes`` serialized: what
        bits per symbol divide by (``free_symbols`` is the alphabet they take, not a count)."""
        s = self.serializer
        return s.n_symbols(nbytes) * s.pattern.count(-1) // max(s.period, 1)


def _entries(
    blocks: Sequence[bytes], prior: Prior | None = None, jobs: int | None = 1
) -> list[list[int]]:
    """``[size, CRC32]`` of every block; the CRC32 by ``prior``'s faster function of the same
    values (its optional ``block_crc32``) where it has one, on ``jobs`` threads for many bytes
    (:func:`container.block_crc32s`)."""
    crc32 = getattr(prior, "block_crc32", None) or zlib.crc32
    crcs = block_crc32s(blocks, crc32, jobs)
    return [[len(b), c] for b, c in zip(blocks, crcs, strict=True)]


def _take(blocks: Iterator[bytes], spec: Mapping[str, Any]) -> list[bytes]:
    try:
        n = len(spec["blocks"])
    except (KeyError, TypeError) as exc:
        raise StreamError(f"bad part entry in header: {exc}") from None
    return [next(blocks) for _ in range(n)]


class StepCoder(PartCoder):
    """The symbol step loop: serializer -> windows -> batches, one block per batch, each with its
    own prior session and entropy coder."""

    coding = "steps"

    def _layout(self, n_symbols: int) -> Layout:
        return Layout(n_symbols, self.serializer.period, self.window, self.batch)

    def _drive(self, lengths: np.ndarray, choose: Any) -> np.ndarray:
        s = self.serializer
        return drive(
            self.prior,
            s.alphabet,
            s.pattern,
            s.free_symbols,
            lengths,
            len(lengths),
            self.window,
            choose,
        )

    def _encode_batch(
        self, symbols: np.ndarray, wins: list[tuple[int, int]], progress: Progress | None
    ) -> bytes:
        mat = window_matrix(symbols, wins)
        enc = self.coder.encoder()
        lengths = np.array([n for _, n in wins])
        self._drive(lengths, encoding_chooser(mat, self.serializer.free_symbols, enc))
        block = enc.finish()
        if progress:
            progress(int(lengths.sum()))
        return block

    def encode(self, data, shape, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        symbols = self.serializer.to_symbols(data)
        layout = self._layout(symbols.size)
        blocks = map_ordered(
            partial(self._encode_batch, symbols, progress=progress), layout.batches(), jobs
        )
        coded = sum(len(b) for b in blocks)
        if coded > data.nbytes:  # the prior expands the part: keep its raw bytes instead
            return StoredCoder.store(data, {self.coding: coded})
        return {"n_symbols": int(symbols.size), "blocks": _entries(blocks)}, blocks

    def decode(self, spec, blocks, dtype, count, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        try:
            n_symbols = int(spec["n_symbols"])
            n_blocks = len(spec["blocks"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StreamError(f"bad part entry in header: {exc}") from None
        if n_symbols != self.serializer.n_symbols(count * dtype.itemsize):
            raise StreamError("part length in header does not match its serialization")
        layout = self._layout(n_symbols)
        needed = layout.n_batches()  # counted before the windows are listed
        if needed != n_blocks:
            raise StreamError(f"header lists {n_blocks} blocks, the layout needs {needed}")
        batches = list(layout.batches())
        symbols = np.zeros(n_symbols, dtype=np.uint16)

        def decode_batch(item: tuple[list[tuple[int, int]], bytes]) -> None:
            wins, block = item  # batches write disjoint slices of ``symbols``
            lengths = np.array([n for _, n in wins])
            mat = self._drive(lengths, decoding_chooser(self.coder.decoder(block), len(block)))
            unwindow(mat, wins, symbols)
            if progress:
                progress(int(lengths.sum()))

        part_blocks = [next(blocks) for _ in batches]
        try:
            map_ordered(decode_batch, zip(batches, part_blocks, strict=True), jobs)
        except ConfigError as exc:  # the header's own window or batch cannot open the prior
            raise StreamError(f"part {spec.get('name')!r}: {exc}") from None
        return self.serializer.from_symbols(symbols, dtype, count)

    def estimate(self, data, shape, teacher_forced):  # type: ignore[no-untyped-def]
        s = self.serializer
        symbols = s.to_symbols(data)
        bits, n_free, method = 0.0, 0, "step"
        for wins in self._layout(symbols.size).batches():
            mat = window_matrix(symbols, wins)
            lengths = np.array([n for _, n in wins])
            scores = self.prior.teacher_forced_scores(s.alphabet, mat.T) if teacher_forced else None
            free_mask = np.asarray(s.pattern)[np.arange(mat.shape[0]) % s.period] < 0
            n_free += int(sum(free_mask[:n].sum() for n in lengths))
            if scores is None:
                counter = BitCounter(mat, s.free_symbols)
                self._drive(lengths, counter)
                bits += counter.bits
            else:
                method = "teacher-forced"
                bits += _teacher_forced_bits(scores, mat, lengths, free_mask, s.free_symbols)
        return bits, n_free, method


ARRAY_SLACK = (6, 64)
"""``(shift, bytes)``: an array coding whose blocks, with ~:data:`BLOCK_ENTRY_BYTES` of header
each, take up to ``nbytes >> shift`` + ``bytes`` more than the part's raw bytes is kept as its
prior wrote it: its raw blocks of noise carry a few bytes each and their values' checksum, which
decoding checks faster than SHA-256 (random float32: +0.01 %), and a tiny array's one block its
checksum. Past that (a config of a few values per block: 6.7x the raw bytes at one value per
block) the part is stored."""
BLOCK_ENTRY_BYTES = 8
"""About what a block's size and CRC32 add to the deflated header."""


class ArrayCoder(PartCoder):
    """The prior's whole-array path (:class:`ArrayCoding`)."""

    coding = "array"

    def encode(self, data, shape, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        meta, blocks = self.prior.encode_array(data, shape, jobs)  # type: ignore[attr-defined]
        if progress:
            progress(self.serializer.n_symbols(data.nbytes))
        coded = sum(len(b) for b in blocks)
        shift, slack = ARRAY_SLACK
        if coded + BLOCK_ENTRY_BYTES * len(blocks) > data.nbytes + (data.nbytes >> shift) + slack:
            return StoredCoder.store(data, {self.coding: coded})
        entries = _entries(blocks, self.prior, jobs)
        return {"coding": "array", "array": meta, "blocks": entries}, blocks

    def decode(self, spec, blocks, dtype, count, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        data = _take(blocks, spec)
        try:
            result = self.prior.decode_array(  # type: ignore[attr-defined]
                spec.get("array") or {}, data, dtype, (count,), jobs
            )
        except ConfigError as exc:  # the header's own options cannot lay the part out
            raise StreamError(f"part {spec.get('name')!r}: {exc}") from None
        if progress:
            progress(self.serializer.n_symbols(count * dtype.itemsize))
        return result

    def estimate(self, data, shape, teacher_forced):  # type: ignore[no-untyped-def]
        _, coded = self.prior.encode_array(data, shape)  # type: ignore[attr-defined]
        return 8.0 * sum(len(b) for b in coded), self._free(data.nbytes), "coded"


class DeltaCoder(PartCoder):
    """The prior's reference path (:class:`DeltaCoding`): the part against ``base``."""

    coding = "delta"

    def encode(self, data, shape, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        if base is None:
            raise ConfigError("delta coding needs a base")
        meta, blocks = self.prior.encode_delta(data, base, shape, jobs)  # type: ignore[attr-defined]
        if progress:
            progress(self.serializer.n_symbols(data.nbytes))
        entries = _entries(blocks, self.prior, jobs)
        return {"coding": "delta", "delta": meta, "blocks": entries}, blocks

    def decode(self, spec, blocks, dtype, count, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        if base is None:
            raise StreamError(f"part {spec.get('name')!r} was coded against a base; none given")
        data = _take(blocks, spec)
        try:
            result = self.prior.decode_delta(  # type: ignore[attr-defined]
                spec.get("delta") or {}, data, base.reshape(-1), dtype, (count,), jobs
            )
        except ConfigError as exc:
            raise StreamError(f"part {spec.get('name')!r}: {exc}") from None
        if progress:
            progress(self.serializer.n_symbols(count * dtype.itemsize))
        return result

    def estimate(self, data, shape, teacher_forced):  # type: ignore[no-untyped-def]
        raise ConfigError("estimate does not take a base")


class StoredCoder(PartCoder):
    """A part's raw bytes (its dtype's, in its order) as one block: what a part is written as
    when its prior's coding would be larger. The part entry's ``stored`` records, as a
    measurement, the bytes the refused coding took (``{"steps": 2449}``); decoding needs neither
    it nor the prior. The block's CRC32 and the stream's SHA-256 guard it like any other."""

    coding = "stored"

    @staticmethod
    def store(data: np.ndarray, refused: dict[str, int]) -> tuple[dict[str, Any], list[bytes]]:
        """The stored entry keys and block of ``data``; ``refused``: the bytes each coding that
        was tried took (recorded under ``stored``)."""
        raw = np.ascontiguousarray(data).reshape(-1).tobytes()
        fields = {"coding": "stored", "stored": refused, "blocks": _entries([raw])}
        return fields, [raw]

    def encode(self, data, shape, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        if progress:
            progress(self.serializer.n_symbols(data.nbytes))
        return self.store(data, {})

    @staticmethod
    def read(
        spec: Mapping[str, Any], blocks: Iterator[bytes], dtype: np.dtype, count: int
    ) -> np.ndarray:
        """The part's items from its one block (``StreamError`` for any other number or size of
        blocks); needs no prior, serializer or coder."""
        data = _take(blocks, spec)
        if len(data) != 1 or len(data[0]) != count * dtype.itemsize:
            sizes = [len(b) for b in data]
            raise StreamError(
                f"part {spec.get('name')!r} is stored as blocks of {sizes} bytes, not one of "
                f"{count * dtype.itemsize} ({count} x {dtype})"
            )
        return np.frombuffer(data[0], dtype=dtype, count=count).copy()

    def decode(self, spec, blocks, dtype, count, jobs, progress, base=None):  # type: ignore[no-untyped-def]
        part = self.read(spec, blocks, dtype, count)
        if progress:
            progress(self.serializer.n_symbols(count * dtype.itemsize))
        return part

    def estimate(self, data, shape, teacher_forced):  # type: ignore[no-untyped-def]
        return 8.0 * data.nbytes, self._free(data.nbytes), "stored"


CODERS: dict[str, type[PartCoder]] = {
    "steps": StepCoder,
    "array": ArrayCoder,
    "delta": DeltaCoder,
    "stored": StoredCoder,
}
NEEDS: dict[str, type | None] = {
    "steps": None,
    "array": ArrayCoding,
    "delta": DeltaCoding,
    "stored": None,
}
"""The interface a prior must offer for each coding."""


def encoder_for(prior: Prior, *pieces: Any, delta: bool = False) -> PartCoder:
    """The coder a pipeline uses for every part: the prior's delta path with a base, else its
    array path when it has one, else the step loop (``pieces``: serializer, coder, window,
    batch)."""
    serializer, coder, window, batch = pieces
    if delta:
        if not isinstance(prior, DeltaCoding):
            raise ConfigError(
                f"prior {prior.name!r} cannot code against a base (it has no delta path); "
                "use the float prior, or compress without a base"
            )
        kind: type[PartCoder] = DeltaCoder
    else:
        kind = ArrayCoder if isinstance(prior, ArrayCoding) else StepCoder
    return kind(serializer, prior, coder, window, batch)


def decoder_for(spec: Mapping[str, Any], prior: Prior, *pieces: Any) -> PartCoder:
    """The coder a part entry names, with the prior that decodes the stream."""
    coding = spec.get("coding", "steps")
    kind = CODERS.get(coding) if isinstance(coding, str) else None
    if kind is None:
        raise StreamError(f"unknown part coding {coding!r} in header (a stream of a newer lmgc?)")
    needs = NEEDS[coding]
    if needs is not None and not isinstance(prior, needs):
        what = "as a whole array" if coding == "array" else "against a base"
        raise StreamError(
            f"part {spec.get('name')!r} was coded {what}, which prior {prior.name!r} cannot decode"
        )
    serializer, coder, window, batch = pieces
    return kind(serializer, prior, coder, window, batch)


def part_entry(name: str, data: np.ndarray, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A part's header entry: its name, dtype and count, then the coder's own keys."""
    return {"name": name, "dtype": dtype_name(data.dtype), "count": int(data.size), **fields}


def _teacher_forced_bits(
    scores: np.ndarray,
    mat: np.ndarray,
    lengths: np.ndarray,
    free_mask: np.ndarray,
    free: Sequence[int],
) -> float:
    """``scores`` is ``(rows, len, A)``; ``mat`` the position-major symbol matrix."""
    lookup = np.full(max(free) + 1, -1, dtype=np.int64)
    lookup[np.asarray(free)] = np.arange(len(free))
    bits = 0.0
    for row, n in enumerate(lengths):
        cols = np.flatnonzero(free_mask[:n])
        probs = distributions(scores[row, cols], np.asarray(free))
        bits += ideal_bits(probs, lookup[mat[cols, row]])
    return bits
