"""The reference file of ``lmgc compress NEW --base OLD``: OLD's tensors, matched to NEW's by name,
read chunk by chunk as NEW's chunks are coded (or decoded) against them.

A tensor of NEW is coded against OLD's tensor of the same name when both have the same dtype,
shape and memory order (and are arrays of the file, not its other bytes); any other tensor is
coded alone. Chunks match one to one, since both are cut by the same rule
(:func:`~lmgc_core.files.readers.chunk_shapes`) with the same chunk size. Each chunk's stream
records the base chunk's SHA-256 and XXH3-128 and the name ``<tensor>@<chunk>``, by which
decoding finds it again; the archive's manifest records OLD's name, size, SHA-256 and XXH3-128,
checked (the XXH3-128; the SHA-256 in archives made before 2026-12-05) before anything is
decoded. Reading is positional (any thread) for tensors stored as they are; a tensor inside a
deflated ``.npz`` member is inflated whole, once, when first asked for.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from lmgc_core.files.archive import SUFFIX
from lmgc_core.files.filecodec import FileEncoder
from lmgc_core.files.readers import (
    chunk_readers,
    guess_format,
    scan,
    tensor_chunks,
    tensor_streams,
)
from lmgc_core.files.segments import Data, FileLayout, InputFileError, Tensor, chunk_span
from lmgc_core.files.source_hash import file_state
from lmgc_core.files.writers import HASH_NAMES, HASHERS, checked_hash
from lmgc_core.stream import container
from lmgc_core.util.dtypes import coding_view, dtype_name
from lmgc_core.util.errors import ConfigError, LMGCError, StreamError

HASH_BLOCK = 4 << 20
TRY_ALONE_BYTES = 64 << 10
"""A chunk this small is also coded alone, and the smaller stream kept: its stream's record of
the base (a SHA-256 and a name, ~100 bytes) can outweigh what the delta saves (a bias, a step
counter, a moment that changed completely)."""


def file_digest(f: IO[bytes], algorithms: tuple[str, ...] = tuple(HASHERS)) -> tuple[int, dict]:
    """``(size, {algorithm: hex digest})`` of a whole file, every hash of ``algorithms`` (keys
    of :data:`~lmgc_core.files.writers.HASHERS`) from one read."""
    f.seek(0)
    hashers, size = {a: HASHERS[a]() for a in algorithms}, 0
    while block := f.read(HASH_BLOCK):
        for h in hashers.values():
            h.update(block)
        size += len(block)
    f.seek(0)
    return size, {a: h.hexdigest() for a, h in hashers.items()}


def chunk_name(tensor: str, index: int) -> str:
    """The base name a chunk's stream records (``<tensor>@<chunk>``)."""
    return f"{tensor}@{index}"


class BaseFile:
    """OLD, scanned once: ``record`` (name, size, SHA-256) and its tensors by name."""

    def __init__(
        self,
        f: IO[bytes],
        name: str,
        fmt: str | None = None,
        dtype: str | None = None,
        expect: tuple[Any, str] | None = None,
    ):
        """``expect``: ``(record, archive name)`` of an archive to decode: the file must be
        the one it records (:func:`check_record`), checked before it is scanned."""
        self._f = f
        self.where = f"--base {name}"
        # to decode: only the hash the record is checked by (XXH3-128 where it has one)
        wanted = tuple(HASHERS) if expect is None else (checked_hash(expect[0] or {}),)
        self._state = file_state(f)
        size, digests = file_digest(f, wanted)
        self.record: dict[str, Any] = {"name": Path(name).name, "size": size, **digests}
        if expect is not None:
            check_record(expect[0], self, expect[1])
            fmt, dtype = expect[0].get("format"), expect[0].get("dtype")
        try:
            self.layout: FileLayout = scan(f, size, name, fmt, dtype)
        except LMGCError as exc:  # a damaged or truncated base is the user's input
            raise ConfigError(f"{self.where}: {exc}") from None
        self.record["format"] = self.layout.format
        if self.layout.format == "raw":
            self.record["dtype"] = dtype_name(self.layout.tensors[0].dtype)
        self._by_name = {t.name: i for i, t in enumerate(self.layout.tensors) if not t.bytes_only}
        self._lock = threading.Lock()
        self._inflated: tuple[int, np.ndarray] | None = None
        self._walk: Iterator[tuple[int, Any]] | None = None  # the deflated members, in order
        self._walk_at = -1

    def check_unchanged(self) -> None:
        """``ConfigError`` when the base file changed since it was hashed (a checkpoint saved
        again to the same path while NEW was coded): the archive's record of the base and the
        chunks it was coded against would then come from different bytes, and no base could
        decode it."""
        now = file_state(self._f)
        if now != self._state:
            raise ConfigError(
                f"{self.where} changed while it was read (it was written to meanwhile): "
                "compress again once it is complete"
            )

    def match(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` (of NEW) is coded against OLD's tensor of its name."""
        index = self._by_name.get(tensor.name)
        if index is None or tensor.bytes_only or tensor.dtype.itemsize == 0:
            return False
        old = self.layout.tensors[index]
        return (old.dtype, old.stored_shape, old.fortran) == (
            tensor.dtype,
            tensor.stored_shape,
            tensor.fortran,
        )

    def chunk(self, name: str, i: int, chunk_bytes: int) -> np.ndarray:
        """Chunk ``i`` of OLD's tensor ``name`` as coded (its :func:`coding_view`): only that
        chunk is found and read, so what it costs does not grow with how many chunks
        ``chunk_bytes`` cuts the tensor into (a forged archive's 1 made a 16 MB base cost 5 GB)."""
        index = self._by_name.get(name)
        if index is None:
            raise StreamError(f"{self.where} has no tensor {name!r}")
        tensor = self.layout.tensors[index]
        span = chunk_span(tensor, chunk_bytes, i)
        if span is None:
            raise StreamError(f"{self.where}: tensor {name!r} has no chunk {i}")
        start, shape = span
        with self._lock:
            read = self._chunk_reader(index, tensor, start, shape)
        return coding_view(read())[0]

    def chunk_named(self, recorded: str, chunk_bytes: int) -> np.ndarray:
        """The chunk a stream names (:func:`chunk_name`)."""
        name, _, i = recorded.rpartition("@")
        if not i.isdigit():
            raise StreamError(f"stream names base {recorded!r}, not '<tensor>@<chunk>'")
        return self.chunk(name, int(i), chunk_bytes)

    def _chunk_reader(
        self, index: int, tensor: Tensor, start: int, shape: tuple[int, ...]
    ) -> Callable[[], np.ndarray]:
        """How to read the part of tensor ``index`` at byte ``start`` of shape ``shape``."""
        count = int(np.prod(shape, dtype=object))
        if self._inflated is not None and self._inflated[0] == index:
            return partial(_part, self._inflated[1], start, count, shape)
        seg = next(
            (s for s in self.layout.segments if isinstance(s, Data) and s.index == index), None
        )
        try:
            if seg is not None:  # stored as it is: positional reads, any thread
                self._walk = None  # the seek moves the file under the members' walk
                self._f.seek(seg.offset + start)
                part = Tensor(tensor.name, tensor.dtype, shape)
                return next(chunk_readers(self._f, part, max(1, part.nbytes), self.where))
            # deflated members are walked once in file order, as NEW's tensors come (each
            # tensor from the first member again made a deflated base cost quadratic time)
            if self._walk is None or index <= self._walk_at:
                self._walk, self._walk_at = iter(tensor_streams(self._f, self.layout,
                                                                self.where)), -1  # fmt: skip
            for found, stream in self._walk:
                self._walk_at = found
                if found == index:  # inside a deflated member: inflated whole, kept
                    (whole,) = tensor_chunks(stream, tensor, max(1, tensor.nbytes), self.where)
                    self._inflated = (index, whole)
                    return partial(_part, whole, start, count, shape)
                for _ in tensor_chunks(stream, self.layout.tensors[found], 1 << 20, self.where):
                    pass
        except InputFileError as exc:
            raise StreamError(str(exc)) from None
        raise StreamError(f"{self.where}: tensor {tensor.name!r} has no data")


def _part(whole: np.ndarray, start: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """``count`` items from byte ``start`` of an inflated tensor, shaped ``shape``."""
    flat = whole.reshape(-1)
    first = start // max(1, flat.dtype.itemsize)
    return flat[first : first + count].reshape(shape)


def check_record(recorded: Any, base: BaseFile | None, where: str) -> None:
    """Refuse (``ConfigError``: a usage error, before anything is written) an archive coded
    against a base when none is given, or another file (size or hash differs: the XXH3-128
    where the record has one, ~7x faster than its SHA-256, which names the file)."""
    if recorded is None:
        return
    if base is None:
        raise ConfigError(
            f"{where} was compressed against base {describe_record(recorded)}: give it with --base"
        )
    check_digests(recorded, base.where, base.record["size"], base.record, where)


def describe_record(recorded: Any, algorithm: str = "sha256") -> str:
    """The recorded base by name, size and hash (``algorithm``: the one shown beside it)."""
    name, size, digest = (recorded.get(k) for k in ("name", "size", algorithm))
    return f"{name!r} ({size} bytes, {HASH_NAMES[algorithm]} {digest})"


def check_digests(recorded: Any, given: str, size: int, digests: dict, where: str) -> None:
    """``ConfigError`` unless ``digests`` (of the file ``given``, ``size`` bytes) has the hash
    the base record is checked by (:func:`~lmgc_core.files.writers.checked_hash`)."""
    algorithm = checked_hash(recorded)
    if digests.get(algorithm) != recorded.get(algorithm):
        raise ConfigError(
            f"{given} ({size} bytes, {HASH_NAMES[algorithm]} {digests.get(algorithm)}) is not "
            f"the base {where} was compressed against: {describe_record(recorded, algorithm)}"
        )


def base_for_header(base: BaseFile, header: Any, chunk_bytes: int | None) -> np.ndarray | None:
    """The base chunk a member stream records (``None`` for a stream coded alone)."""
    entry = header.get("base") if isinstance(header, dict) else None
    if entry is None:
        return None
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or chunk_bytes is None:
        raise StreamError(f"member stream names no base chunk ({entry!r})")
    return base.chunk_named(name, chunk_bytes)


class BaseEncoder(FileEncoder):
    """A :class:`FileEncoder` that codes each chunk of a tensor :meth:`BaseFile.match` es
    against the base's chunk, and records the base in the manifest."""

    def __init__(self, pipeline: Any, reference: BaseFile, chunk_bytes: int) -> None:
        super().__init__(pipeline)
        pipeline.check_deltas("--base")  # before the first file is written
        self.reference = reference
        self.base = reference.record
        self.chunk_bytes = chunk_bytes

    def check_unchanged(self) -> None:
        self.reference.check_unchanged()

    def matches(self, tensors: list[Tensor]) -> bool:
        return any(self.reference.match(t) for t in tensors)

    def coder_for(self, tensor: Tensor, index: int, i: int) -> Callable[..., bytes]:
        if not self.reference.match(tensor):
            return super().coder_for(tensor, index, i)

        def code(view: np.ndarray, progress: Callable[[int], None], jobs: int) -> bytes:
            ref = self.reference.chunk(tensor.name, i, self.chunk_bytes)
            name = chunk_name(tensor.name, i)
            blob = self.pipeline.compress(
                view, progress=progress, jobs=jobs, base=ref, base_name=name
            )
            if view.nbytes <= TRY_ALONE_BYTES:  # the base's record may outweigh the gain
                alone = self.pipeline.compress(view, jobs=jobs)
                if len(alone) <= len(blob):
                    return bytes(alone)
            self.coded_against[index] = tensor.name
            return bytes(blob)

        return code


def open_base(base: str, stack: ExitStack) -> IO[bytes]:
    """The file ``--base`` names, opened (kept open on ``stack``): a regular file, since it is
    read twice (hashed, then its tensors; a device such as /dev/zero was hashed forever, a pipe
    was drained by the hash), and not an lmgc archive (the base is the file it restores)."""
    try:  # looked at before it is opened: opening a FIFO waits for a writer
        regular = stat.S_ISREG(os.stat(base).st_mode)
    except OSError:
        regular = True  # missing or unreadable: open() says so
    f = stack.enter_context(open(base, "rb")) if regular else None  # noqa: SIM115
    if f is None or not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        raise ConfigError(
            f"--base {base} is not a regular file (a pipe or a device): save it to a file first"
        )
    if base.lower().endswith(SUFFIX) or f.read(len(container.MAGIC)) == container.MAGIC:
        raise ConfigError(
            f"--base {base} is an lmgc archive: the base is the file it restores (decompress "
            "it first)"
        )
    f.seek(0)
    return f


def attach(reader: Any, decoder: Any, base: str | None, where: str, stack: ExitStack) -> bool:
    """Give ``decoder`` (a ``StreamDecoder``) the chunks of ``base`` for the archive ``reader``
    reads, after checking ``base`` against its record (:func:`check_record`: a missing, other or
    truncated base is a ``ConfigError``). False when the archive was coded alone (``base`` is
    then not opened)."""
    if reader.base is None:
        return base is not None and _attach_array(reader, decoder, base, stack)
    if base is None:
        check_record(reader.base, None, where)
    f = open_base(str(base), stack)
    reference = BaseFile(f, str(base), expect=(reader.base, where))
    decoder.bases = lambda header: base_for_header(reference, header, reader.chunk_bytes)
    return True


def _attach_array(reader: Any, decoder: Any, base: str, stack: ExitStack) -> bool:
    """A bare stream the API coded against an array (``compress(x, base=old)``): ``--base`` is
    a file holding that one array (its dtype, shape and SHA-256 are checked by the decode).
    It was refused with 'decode it with that base (--base)', and --base was then ignored."""
    from lmgc_core.files.readers import load_arrays

    head = reader.heads.get("") if reader.kind == "stream" and not reader.compact else None
    if head is None or "base" not in head[0]:
        return False
    f = open_base(base, stack)
    try:
        arrays = load_arrays(f, os.fstat(f.fileno()).st_size, base)
    except LMGCError as exc:
        raise ConfigError(f"--base {base}: {exc}") from None
    if len(arrays) != 1:
        raise ConfigError(
            f"--base {base} holds {len(arrays)} arrays: a stream is coded against one"
        )
    (array,) = arrays.values()
    decoder.bases = lambda header: array
    return True


def encoder_for(
    pipeline: Any,
    base: str | None,
    stack: ExitStack,
    chunk_bytes: int,
    fmt: str | None = None,
    dtype: str | None = None,
) -> FileEncoder:
    """A :class:`BaseEncoder` against the file ``base`` (kept open on ``stack``), or a plain
    :class:`FileEncoder` without one."""
    if base is None:
        return FileEncoder(pipeline)
    f = open_base(base, stack)
    return BaseEncoder(pipeline, BaseFile(f, str(base), *_own_format(f, str(base), dtype)),
                       chunk_bytes)  # fmt: skip


def _own_format(f: IO[bytes], name: str, dtype: str | None) -> tuple[str | None, str | None]:
    """How to read a base: as the format its name or first bytes say (not NEW's ``--format``
    or ``--dtype``: an ``.npy`` base of a raw NEW was read as raw, its header as values), and
    as raw ``dtype`` only when they say none."""
    own = guess_format(f, os.fstat(f.fileno()).st_size, name)
    return (own, None) if own is not None else ("raw", dtype)
