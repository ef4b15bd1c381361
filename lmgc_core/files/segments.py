"""A source file as *segments*: literal bytes (headers, zip records) and tensor data, in file order.

Every reader (``.npy``, ``.npz``, ``.safetensors``, raw) describes its file this way. Compression
codes the tensor data and keeps the literal bytes, so decompression can write the very same file
back: literal, tensor, literal, ... For ``.npz`` members that zip deflated, a
:class:`Deflated` segment holds the member's own segments and is deflated again on the way out.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmgc_core.util.dtypes import decode_dtype, encode_dtype
from lmgc_core.util.errors import LMGCError, StreamError

FORMATS = ("npy", "npz", "safetensors", "raw", "torch")


class InputFileError(LMGCError):
    """An input file is not what its name or contents say (bad magic, truncated, bad header)."""


MAX_DIMS = 64
"""numpy's limit on an array's dimensions."""


def check_shape(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """InputFileError for a header's shape numpy cannot hold (it failed later in a reshape
    with numpy's own message) and for items of no bytes (``|S0``: numpy allocates them as
    one-byte items, so a declared shape, not the file, set the memory)."""
    if dtype.itemsize == 0:
        raise InputFileError(
            f"{where}: items of 0 bytes ({dtype.str}) hold nothing to compress: code the file "
            "as raw bytes (--dtype uint8)"
        )
    if len(shape) > MAX_DIMS:
        raise InputFileError(f"{where}: {len(shape)} dimensions (numpy holds at most {MAX_DIMS})")
    nonzero = 1
    for n in shape:
        nonzero *= max(n, 1)
    if nonzero * dtype.itemsize >= 1 << 62:
        raise InputFileError(f"{where}: shape {tuple(shape)} is too large for numpy to hold")


MAX_ALIASES = 16
"""A tensor's aliases at most: a manifest naming more is refused (each is a copy of the array
in a conversion, so a forged list would multiply the output)."""
MAX_VIEWS = 64
"""A tensor's views at most (each is at most the tensor's size in a conversion)."""
MAX_EMPTY = 1 << 48
"""The product of an empty view's other dimensions at most (numpy holds no array whose
dimensions multiply past 2^63 bytes, even an empty one)."""


@dataclass(frozen=True)
class View:
    """A named array that is part of a tensor's values: a ``torch.save`` file's tensors that
    view one storage in several ways (``w`` and ``w[4:]``, ``w`` and ``w.t()``), which lmgc
    codes once, as the storage, and gives back by name (conversions, ``safe_open``)."""

    name: str
    offset: int
    """Where it starts, in items of the storage."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    """In items; 0 repeats an item (never past the storage's size, see :meth:`fits`)."""

    def fits(self, count: int) -> bool:
        """Every item it reads lies in a storage of ``count`` items, and it holds no more items
        than the storage (a stride-0 view could otherwise claim terabytes of a 4-byte one); an
        empty one has a shape numpy can hold (``x[:0].view(0, 2**62)`` is a tensor torch
        saves, which ``as_strided`` refused with a traceback)."""
        if self.offset < 0 or len(self.shape) != len(self.stride) or len(self.shape) > 64:
            return False
        if min(self.shape, default=1) < 0 or min(self.stride, default=0) < 0:
            return False
        numel = int(np.prod(self.shape, dtype=object))
        if numel == 0:
            return self.offset <= count and math.prod(max(n, 1) for n in self.shape) <= MAX_EMPTY
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        return last < count and numel <= count

    def take(self, values: np.ndarray) -> np.ndarray:
        """This view's array, copied out of its storage's values (any shape, C order). A
        dimension of one item reads nothing by its stride, which may be any size (torch keeps
        what the tensor had; 2^70 overflowed ``as_strided``): it takes 0."""
        flat = np.ascontiguousarray(values).reshape(-1)
        if 0 in self.shape:
            return np.empty(self.shape, flat.dtype)
        size = flat.dtype.itemsize
        pairs = zip(self.shape, self.stride, strict=True)
        strides = tuple(s * size if n > 1 else 0 for n, s in pairs)
        part = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.shape, strides, writeable=False
        )
        return np.array(part)

    def to_json(self) -> list[Any]:
        return [self.name, self.offset, list(self.shape), list(self.stride)]

    @classmethod
    def from_json(cls, data: Any, count: int) -> View:
        name, offset, shape, stride = data
        if not isinstance(name, str) or type(offset) is not int:
            raise TypeError(f"bad view {data!r}")
        if not all(type(n) is int for n in [*shape, *stride]):
            raise TypeError(f"bad view {data!r}")
        view = cls(name, offset, tuple(shape), tuple(stride))
        if not view.fits(count):
            raise ValueError(f"view {name!r} reads past its storage of {count} items")
        return view


@dataclass
class Tensor:
    """One array of a source file, as its bytes lie there."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    """The array's shape (for a Fortran-ordered ``.npy``: the shape ``np.load`` returns)."""
    fortran: bool = False
    """The bytes are in Fortran order: they are the C-order bytes of the transpose."""
    tag: str = ""
    """The format's own name for the dtype (safetensors ``BF16``, ``F4``...)."""
    nbytes: int = -1
    declared_shape: tuple[int, ...] | None = None
    """The format's own shape when it differs from ``shape`` (packed ``F4`` tensors are coded
    as their bytes)."""
    bytes_only: bool = False
    """Not an array of the source: a run of its other bytes (trailing bytes, a zip member that
    is not an array...) too large for the manifest, coded as a ``uint8`` tensor
    (:func:`byte_run`). Conversions to another format leave it out."""
    aliases: tuple[str, ...] = ()
    """Other names of the same array in the source (a ``torch.save`` file's tied weights: one
    storage, viewed whole by several tensors): read and converted under each of them, coded
    once."""
    views: tuple[View, ...] = ()
    """Named arrays that are parts of this one (a ``torch.save`` file's views of a storage):
    read and converted under their names, coded as part of this one."""
    view: View | None = None
    """This array is that view of the values of the tensor it is listed with (what
    :meth:`view_tensors` gives; never in a manifest)."""

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            self.nbytes = int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize

    def view_tensors(self) -> list[Tensor]:
        """Each of :attr:`views` as an array of its own (:attr:`view` set)."""
        return [Tensor(v.name, self.dtype, v.shape, tag=self.tag, view=v) for v in self.views]

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """Shape of the bytes read in C order (reversed for Fortran order)."""
        return self.shape[::-1] if self.fortran else self.shape

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dtype": encode_dtype(self.dtype),
            "shape": list(self.shape),
            "nbytes": self.nbytes,
        }
        if self.fortran:
            out["fortran"] = True
        if self.tag:
            out["tag"] = self.tag
        if self.declared_shape is not None:
            out["declared_shape"] = list(self.declared_shape)
        if self.bytes_only:
            out["bytes"] = True
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.views:
            out["views"] = [v.to_json() for v in self.views]
        return out

    @classmethod
    def from_json(cls, data: Any) -> Tensor:
        try:
            shape = tuple(int(n) for n in data["shape"])
            tensor = cls(
                name=str(data["name"]),
                dtype=decode_dtype(data["dtype"]),
                shape=shape,
                fortran=bool(data.get("fortran", False)),
                tag=str(data.get("tag", "")),
                nbytes=int(data["nbytes"]),
                bytes_only=data.get("bytes", False) is True,
            )
            declared = data.get("declared_shape")
            if declared is not None:
                tensor.declared_shape = tuple(int(n) for n in declared)
            aliases = data.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise TypeError(f"aliases {aliases!r} are not a list of names")
            if len(aliases) > MAX_ALIASES:
                raise ValueError(f"{len(aliases)} aliases, over {MAX_ALIASES}")
            views = data.get("views", [])
            if not isinstance(views, list) or len(views) > MAX_VIEWS:
                raise ValueError(f"views must be a list of at most {MAX_VIEWS}")
            if views and (tensor.fortran or tensor.bytes_only or len(shape) != 1):
                raise ValueError("views of a tensor that is not a flat array")
            count = int(np.prod(shape, dtype=object))
            tensor.views = tuple(View.from_json(v, count) for v in views)
            tensor.aliases = tuple(aliases)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamError(f"corrupted lmgc archive: bad tensor entry ({exc})") from None
        if min(shape, default=0) < 0 or tensor.nbytes != count * tensor.dtype.itemsize:
            raise StreamError(f"corrupted lmgc archive: tensor {tensor.name!r} has a bad size")
        if tensor.bytes_only and (tensor.dtype != np.uint8 or len(shape) != 1):
            raise StreamError(f"corrupted lmgc archive: byte run {tensor.name!r} is not uint8")
        return tensor


@dataclass
class Literal:
    """Bytes copied as they are (file headers, zip records, padding)."""

    data: bytes


LITERAL_MAX = 64 << 10
"""Runs of non-array bytes up to this size are kept in the manifest (base64); larger ones
become byte tensors, read in chunks and coded like arrays, so that any trailing bytes or odd
zip member keeps the manifest small and memory bounded by the chunk size."""


@dataclass
class Data:
    """The bytes of tensor ``index``, at ``offset`` of the enclosing byte stream."""

    index: int
    offset: int


@dataclass
class Deflated:
    """A zip member deflated with zlib at ``level``: its compressed bytes lie at ``offset`` of the
    file (``size`` bytes); ``segments`` describe the uncompressed member."""

    offset: int
    size: int
    level: int
    segments: list[Literal | Data] = field(default_factory=list)
    member: Any = None
    """The member's ``zipfile.ZipInfo`` (to read it while compressing; not stored): by its
    entry, not its name, which two members may share (zipfile opens the last of them by name:
    the first one's array was lost)."""


Segment = Literal | Data | Deflated


def byte_run(
    read: Callable[[], bytes],
    offset: int,
    n: int,
    tensors: list[Tensor],
    where: str,
    label: str = "",
) -> Literal | Data:
    """``n`` bytes at ``offset`` of a stream that are not an array: a :class:`Literal` (the
    bytes ``read()`` returns) when small, else a byte tensor named ``<label>bytes@<offset>``
    appended to ``tensors`` (nothing is read here: compression reads it in chunks)."""
    if n <= LITERAL_MAX:
        data = read()
        if len(data) != n:
            raise InputFileError(f"{where}: file ended early")
        return Literal(data)
    name = f"{label}bytes@{offset}"
    tensors.append(Tensor(name, np.dtype(np.uint8), (n,), bytes_only=True))
    return Data(len(tensors) - 1, offset)


@dataclass
class FileLayout:
    """Everything needed to rebuild a source file around its tensors' bytes."""

    format: str
    size: int
    tensors: list[Tensor]
    """In the file's own member order (safetensors header order, zip order)."""
    segments: list[Segment]
    """In file order."""
    metadata: dict[str, Any] | None = None
    """safetensors ``__metadata__`` (shown by ``lmgc info``; rebuilt from the literal header)."""
    identical: bool = True
    """False when the file cannot be rebuilt byte for byte (an npz member deflated by a zlib
    whose output this machine does not reproduce): the arrays still come back exactly."""
    notes: list[str] = field(default_factory=list)

    def segments_json(self) -> list[Any]:
        return [_segment_json(s) for s in self.segments]


def _segment_json(seg: Segment) -> Any:
    if isinstance(seg, Literal):
        return ["literal", base64.b64encode(seg.data).decode()]
    if isinstance(seg, Data):
        return ["tensor", seg.index]
    return ["deflated", seg.level, [_segment_json(s) for s in seg.segments]]


def _cut(tensor: Tensor, chunk_bytes: int) -> tuple[int, int, int, tuple[int, ...]] | None:
    """How a tensor's stored (C-order) bytes are cut into chunks of at most ``chunk_bytes``
    (:func:`chunk_shapes`): whole rows along the first axis when a row fits (a prior may
    use the trailing shape), else flat runs of items; ``None`` when it is one chunk (its own
    shape). Else ``(units, per_chunk, unit_bytes, trailing)``: the tensor as ``units`` rows
    (or items) of ``unit_bytes`` bytes, ``per_chunk`` of them a chunk, each of shape
    ``trailing`` (a row's; ``()`` for an item)."""
    shape, item = tensor.stored_shape, tensor.dtype.itemsize
    if tensor.nbytes <= chunk_bytes or item == 0:
        return None
    row = int(np.prod(shape[1:], dtype=object)) * item
    if len(shape) > 1 and row <= chunk_bytes:
        return shape[0], max(1, chunk_bytes // row), row, tuple(shape[1:])
    return tensor.nbytes // item, max(1, chunk_bytes // item), item, ()


def chunk_shapes(tensor: Tensor, chunk_bytes: int) -> list[tuple[int, ...]]:
    """The shapes of a tensor's chunks of at most ``chunk_bytes``, in order (:func:`_cut`):
    whole rows along the first axis when a row fits, else flat runs; one chunk (its own
    shape) when the tensor fits."""
    cut = _cut(tensor, chunk_bytes)
    if cut is None:
        return [tensor.stored_shape]
    units, per_chunk, _, trailing = cut
    return [(min(per_chunk, units - s), *trailing) for s in range(0, units, per_chunk)]


def chunk_count(tensor: Tensor, chunk_bytes: int) -> int:
    """How many chunks :func:`_cut` makes, without listing them (a crafted manifest could make
    the list astronomically long)."""
    cut = _cut(tensor, chunk_bytes)
    return 1 if cut is None else -(-cut[0] // cut[1])


def chunk_span(tensor: Tensor, chunk_bytes: int, i: int) -> tuple[int, tuple[int, ...]] | None:
    """Chunk ``i`` of :func:`_cut`: its first byte in the tensor's stored bytes and its shape,
    found without the chunks before it (a base chunk a stream names: a forged chunk size of 1
    made their list as long as the base tensor has bytes); ``None`` past the last."""
    cut = _cut(tensor, chunk_bytes)
    if cut is None:
        return (0, tensor.stored_shape) if i == 0 else None
    units, per_chunk, unit_bytes, trailing = cut
    start = i * per_chunk
    if i < 0 or start >= units:
        return None
    return start * unit_bytes, (min(per_chunk, units - start), *trailing)


def segments_from_json(data: Any, n_tensors: int, nested: bool = False) -> list[Segment]:
    """Parse the archive manifest's ``segments``; offsets are not needed to rebuild."""
    out: list[Segment] = []
    if not isinstance(data, list):
        raise StreamError("corrupted lmgc archive: segments must be a list")
    for item in data:
        try:
            kind = item[0]
            if kind == "literal":
                out.append(Literal(base64.b64decode(item[1], validate=True)))
            elif kind == "tensor" and 0 <= int(item[1]) < n_tensors:
                out.append(Data(int(item[1]), 0))
            elif kind == "deflated" and not nested:
                level = int(item[1])
                if not -1 <= level <= 9:
                    raise ValueError(f"deflate level {level}")
                out.append(Deflated(0, 0, level, segments_from_json(item[2], n_tensors, True)))
            else:
                raise ValueError(f"unknown segment {str(item)[:40]}")
        except (IndexError, TypeError, ValueError, KeyError) as exc:
            raise StreamError(f"corrupted lmgc archive: bad segment ({exc})") from None
    return out
