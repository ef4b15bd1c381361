"""Writing decoded tensors out: the source file rebuilt byte for byte from its segments, or a
conversion to ``.npy``, ``.npz``, ``.safetensors`` or raw bytes. Tensors arrive chunk by chunk
(C-order bytes as they lay in the source), so nothing is held whole unless a conversion must
reorder it (a Fortran-ordered array into safetensors)."""

from __future__ import annotations

import hashlib
import queue
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import IO, Any

import numpy as np
import xxhash

from lmgc_core.files import npy, safetensors_file
from lmgc_core.files.segments import Data, Deflated, InputFileError, Literal, Segment, Tensor
from lmgc_core.util import interrupts

Chunks = Callable[[int], Iterator[np.ndarray]]
"""``chunks(tensor index)``: the decoded chunks of a tensor, in order."""


HASHERS: dict[str, Callable[[], Any]] = {
    "sha256": lambda: hashlib.sha256(),
    "xxh3_128": lambda: xxhash.xxh3_128(),
}
"""The hashes an archive records of its source file, by their key in the record."""
HASH_NAMES = {"sha256": "SHA-256", "xxh3_128": "XXH3-128"}


def checked_hash(source: dict[str, Any]) -> str:
    """The key of the hash a rebuilt file is checked against: XXH3-128 where the archive's
    source record has it (~7x faster than SHA-256), else (archives made before) SHA-256."""
    return "xxh3_128" if isinstance(source.get("xxh3_128"), str) else "sha256"


class Discard:
    """An output that keeps nothing: ``lmgc decompress --test`` and ``compress --verify`` decode
    an archive through every check (the rebuilt file's hash included) and write nowhere."""

    def write(self, data: Any) -> None:
        del data


class HashingWriter:
    """Counts what goes to ``out`` and, with ``hashing``, hashes it (a rebuilt file is checked
    against the source's hash: ``algorithm``, a key of :data:`HASHERS`; XXH3-128 where the
    archive records it, at ~7.5 against SHA-256's ~1 GB/s). Without: a file whose bytes all came
    through its streams' own checks (a compact archive) or a conversion, which has no source
    hash to meet.

    ``background`` (a decode with ``jobs > 1``): the SHA-256 runs on a thread of its own, fed in
    file order, so the writing thread only writes (100 MB ``.npy`` in a zip archive, in-process
    decompress ``-j 2``: 0.128 -> 0.107 s). At most :data:`HASH_AHEAD` writes wait for it (each
    holds its chunk), so memory stays bounded when hashing is the slower."""

    def __init__(
        self,
        out: IO[bytes],
        hashing: bool = True,
        background: bool = False,
        algorithm: str = "sha256",
    ) -> None:
        self.out = out
        self.algorithm = algorithm
        new = HASHERS[algorithm]
        self.sha, self._background = None, False
        if hashing:
            self.sha, self._background = _hash_thread(new) if background else (new(), False)
        self.size = 0

    def write(self, data: Any) -> None:
        interrupts.check()  # a Ctrl-C that arrived inside a C callback stops at the next write
        view = memoryview(data).cast("B")
        if self.sha is not None:
            self.sha.update(view)
        self.out.write(view)
        self.size += len(view)

    def hexdigest(self) -> str | None:
        """The hash of everything written (``None`` without ``hashing``)."""
        return None if self.sha is None else self.sha.hexdigest()

    def close(self) -> None:
        """Stop a background hash that will not be asked for (an error while writing)."""
        if self._background and self.sha is not None:
            self.sha.close()


HASH_AHEAD = 4
"""Writes that may wait for the background SHA-256 (:class:`HashingWriter`)."""


def _hash_thread(new: Callable[[], Any]) -> tuple[Any, bool]:
    """A :class:`_HashThread` and True, or the hash itself and False where no thread can
    start (a process or cgroup limit): the writes then hash as they go."""
    try:
        return _HashThread(new), True
    except RuntimeError:
        return new(), False


class _HashThread:
    """A hash (``new()``) fed on a thread of its own (hashlib and xxhash release the GIL on big
    updates)."""

    def __init__(self, new: Callable[[], Any] = HASHERS["sha256"]) -> None:
        self._sha = new()
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=HASH_AHEAD)
        self._thread = threading.Thread(target=self._run, name="lmgc-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (view := self._queue.get()) is not None:
            self._sha.update(view)

    def update(self, view: memoryview) -> None:
        self._queue.put(view)

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _bytes(arr: np.ndarray) -> memoryview:
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1).view(np.uint8)) if arr.dtype.itemsize else memoryview(b"")


def rebuild(segments: list[Segment], chunks: Chunks, out: HashingWriter) -> None:
    """The source file: literal bytes and tensor data in file order."""
    for seg in segments:
        if isinstance(seg, Literal):
            out.write(seg.data)
        elif isinstance(seg, Data):
            for arr in chunks(seg.index):
                out.write(_bytes(arr))
        else:
            _rebuild_deflated(seg, chunks, out)


def data_order(segments: list[Segment]) -> list[int]:
    """The tensor indices in the order :func:`rebuild` asks for their chunks (file order)."""
    order: list[int] = []
    for seg in segments:
        if isinstance(seg, Data):
            order.append(seg.index)
        elif isinstance(seg, Deflated):
            order.extend(data_order(seg.segments))
    return order


def _rebuild_deflated(seg: Deflated, chunks: Chunks, out: HashingWriter) -> None:
    feed = _Deflater(seg.level, out)
    for inner in seg.segments:
        if isinstance(inner, Literal):
            feed.write(inner.data)
        else:
            for arr in chunks(inner.index):
                feed.write(_bytes(arr))
    feed.finish()


class _Deflater:
    """A member's content deflated again at ``level``. Levels 1-9 give the same bytes however
    the content is split across calls; level 0's stored blocks end where the calls split it,
    so level 0 is fed in pieces of exactly :data:`~lmgc_core.files.npz.DEFLATE_PIECE` bytes,
    the pieces compression tested it with (fed by chunks, a level-0 member never decoded)."""

    def __init__(self, level: int, out: HashingWriter) -> None:
        from lmgc_core.files.npz import DEFLATE_PIECE

        self.packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        self.out = out
        self.piece = DEFLATE_PIECE if level == 0 else 0
        self.held = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        if not self.piece:
            self.out.write(self.packer.compress(data))
            return
        view = memoryview(data).cast("B")
        if self.held:
            take = self.piece - len(self.held)
            self.held += view[:take]
            view = view[take:]
            if len(self.held) < self.piece:
                return
            self.out.write(self.packer.compress(self.held))
            self.held.clear()
        while len(view) >= self.piece:
            self.out.write(self.packer.compress(view[: self.piece]))
            view = view[self.piece :]
        self.held += view

    def finish(self) -> None:
        if self.held:
            self.out.write(self.packer.compress(self.held))
        self.out.write(self.packer.flush())


NAMED_FORMATS = frozenset({"npz", "safetensors"})
"""Conversions that write each array under its name, and so under each of its aliases too."""


def arrays(tensors: list[Tensor], fmt: str | None = None) -> list[tuple[int, Tensor]]:
    """``(index, tensor)`` of the source's arrays: conversions leave byte tensors (runs of the
    source's other bytes, see :func:`~lmgc_core.files.segments.byte_run`) out. For a ``fmt``
    of :data:`NAMED_FORMATS`, right after an array, each of its other names (tied weights), as
    the same array under that name, and each of its views (``Tensor.view``: :func:`values`
    gives its values)."""
    out = []
    for i, t in enumerate(tensors):
        if not t.bytes_only:
            out.append((i, t))
            if fmt in NAMED_FORMATS:
                out += [(i, replace(t, name=alias, aliases=(), views=())) for alias in t.aliases]
                out += [(i, v) for v in t.view_tensors()]
    return out


def chunk_order(found: list[tuple[int, Tensor]]) -> list[int]:
    """The order in which writing the :func:`arrays` entries ``found`` asks for each tensor's
    chunks: a view's are never asked for (:func:`values` takes it from its tensor's)."""
    return [index for index, tensor in found if tensor.view is None]


def values(chunks: Chunks, index: int, tensor: Tensor, held: dict[int, np.ndarray]) -> Any:
    """The chunks of the array ``tensor`` (an entry of :func:`arrays` at ``index``): the
    tensor's own; a tensor with views whole, kept in ``held`` for them (they follow it), and a
    view its part of that, so the tensor decodes once."""
    if tensor.view is None and not tensor.views:
        return chunks(index)
    if tensor.view is None:
        held.clear()
        parts = [c.reshape(-1) for c in chunks(index)]
        # in the chunks' dtype: concatenate gives native byte order, and a big-endian
        # storage's values were then read back as big-endian bytes (garbage in an .npz)
        held[index] = np.concatenate(parts, dtype=parts[0].dtype)
        return [held[index]]
    return [tensor.view.take(held[index])]


def _member_names(tensors: list[tuple[int, Tensor]], fmt: str) -> list[str]:
    """The names a conversion gives the arrays (``arr_<i>`` for nameless ones, as ``np.savez``
    does), refused when two are equal (one would silently replace the other on load) or when
    one is not a plain relative path (``../x``, ``/x``: an ``.npz`` member that unzips outside
    its folder)."""
    names = [t.name or f"arr_{k}" for k, (_, t) in enumerate(tensors)]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputFileError(
                f"the archive holds two tensors named {name!r}; a .{fmt} cannot hold both "
                "(decompress to the source format, or to raw bytes)"
            )
        seen.add(name)
        parts = name.replace("\\", "/").split("/")
        if (
            name.startswith(("/", "\\"))
            or (name[:1].isalpha() and name[1:2] == ":" and name[2:3] in ("", "/", "\\"))
            or any(p in ("", ".", "..") for p in parts)
            or "\0" in name
            or (fmt == "safetensors" and name == "__metadata__")
            or (fmt == "npz" and not _utf8(name))  # zip names are UTF-8 (a lone surrogate)
        ):
            raise InputFileError(f"tensor name {name!r} is not a safe member name for a .{fmt}")
    return names


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_raw(tensors: list[Tensor], chunks: Chunks, out: HashingWriter) -> None:
    """Every array's bytes, as they lay in the source, back to back."""
    for index, _ in arrays(tensors):
        for arr in chunks(index):
            out.write(_bytes(arr))


def write_npy(tensors: list[Tensor], chunks: Chunks, out: HashingWriter) -> None:
    found = arrays(tensors)
    if len(found) != 1:
        raise InputFileError(
            f"the archive holds {len(found)} arrays; a .npy holds one: use .npz or .safetensors"
        )
    index, tensor = found[0]
    tensor = safetensors_file.as_tagged(tensor)
    out.write(npy.header_bytes(tensor))
    for arr in chunks(index):
        out.write(_bytes(safetensors_file.tagged_values(arr, tensor.dtype)))


def write_npz(tensors: list[Tensor], chunks: Chunks, out: HashingWriter) -> None:
    """An uncompressed ``.npz`` as ``np.savez`` writes one (``arr_0`` for nameless arrays)."""
    found = arrays(tensors, "npz")
    names = _member_names(found, "npz")
    held: dict[int, np.ndarray] = {}
    with zipfile.ZipFile(out.out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for (index, tensor), name in zip(found, names, strict=True):
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            tensor = safetensors_file.as_tagged(tensor)
            with zf.open(info, "w", force_zip64=True) as member:
                member.write(npy.header_bytes(tensor))
                for arr in values(chunks, index, tensor, held):
                    interrupts.check()  # the zip writes to the file, not through ``out``
                    member.write(_bytes(safetensors_file.tagged_values(arr, tensor.dtype)))


def write_safetensors(
    tensors: list[Tensor], metadata: dict[str, Any] | None, chunks: Chunks, out: HashingWriter
) -> None:
    """A ``.safetensors`` file, tensors in the archive's order, little-endian data."""
    found = arrays(tensors, "safetensors")
    targets = []
    for (_, t), name in zip(found, _member_names(found, "safetensors"), strict=True):
        little = t.dtype.newbyteorder("<") if t.dtype.byteorder == ">" else t.dtype
        targets.append(Tensor(name, little, t.shape, tag=t.tag, nbytes=t.nbytes))
        targets[-1].declared_shape = t.declared_shape
    out.write(safetensors_file.header_bytes(targets, metadata))
    held: dict[int, np.ndarray] = {}
    for (index, src), dst in zip(found, targets, strict=True):
        parts: Iterable[np.ndarray] = values(chunks, index, src, held)
        if src.fortran:  # safetensors is C order only: the whole array, transposed
            whole = np.concatenate([p.reshape(-1) for p in parts]).reshape(src.stored_shape)
            parts = [np.ascontiguousarray(whole.T)]
        for arr in parts:
            out.write(_bytes(arr.astype(dst.dtype, copy=False)))
