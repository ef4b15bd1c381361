"""``torch.save`` files (the zip torch writes since 1.6) as segments: storages as tensors, the
rest — ``data.pkl``, ``version``, ``byteorder``, zip records and padding — as literal bytes
(runs over 64 KiB as byte tensors, :func:`~lmgc_core.files.segments.byte_run`).

Each ``<archive>/data/<key>`` member holds one storage's bytes, stored (never deflated) and
aligned by padding in the local header's extra field; both travel as literal bytes, so the file
comes back byte for byte. A storage's dtype and item count come from its record in
``data.pkl``, read by :mod:`~lmgc_core.files.torch_pickle` without running it. What lmgc codes are
the *storages*, not the tensors: views sharing a storage and non-contiguous tensors are just
the bytes of their storage. A storage seen by one tensor that covers it in C order takes that
tensor's path as its name and, for 0-d and for 2-D and larger tensors, its shape (so a prior
sees rows, and a 0-d tensor, such as AdamW's ``step``, lists and converts as one); in Fortran
order (a transposed tensor saved), the same as a Fortran-ordered ``.npy``'s (its rows are the
storage's); one seen that way by several tensors alike (tied weights) takes the first one's,
the others' paths as its aliases; any other storage is named ``data/<key>`` and is 1-D.

A storage the pickle does not describe (an unreadable pickle, a record that does not fit its
member's size) is coded as ``uint8`` bytes: still exact, just less compact. Nothing in the file
is executed or imported. The legacy format (torch < 1.6, a bare pickle stream) is refused.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from typing import IO

import numpy as np

from lmgc_core.files.npz import ZIP_ERRORS, file_run, member_data_span
from lmgc_core.files.safetensors_file import tag_of
from lmgc_core.files.segments import (
    MAX_ALIASES,
    MAX_VIEWS,
    Data,
    FileLayout,
    InputFileError,
    Tensor,
    View,
    check_shape,
)
from lmgc_core.files.torch_pickle import (
    STORAGE_TYPES,
    PickleInfo,
    PickleReadError,
    StorageRef,
    TensorRef,
    read_pickle,
)
from lmgc_core.util.dtypes import parse_dtype
from lmgc_core.util.errors import LMGCError

_LOCAL = struct.Struct("<4s22xHH")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickled value of a legacy (pre-1.6) torch file."""
MAX_PICKLE = 64 << 20
"""A larger ``data.pkl`` is not followed (its storages are coded as bytes): reading it whole
must not cost more memory or time than the storages themselves."""


SUFFIXES = (".pt", ".pth")
"""Inputs with these names are torch files. Not outputs: ``-o x.pt`` names no format, so a
``.pt`` compressed as raw bytes (``--dtype``) comes back as raw bytes."""


def format_of_name(name: str) -> str | None:
    """``torch`` for an input named ``.pt``/``.pth`` (any case); ``pytorch_model.bin`` and
    other names are sniffed (:func:`is_torch_zip`)."""
    return "torch" if name.lower().endswith(SUFFIXES) else None


def is_torch_zip(f: IO[bytes]) -> bool:
    """A zip whose first member is ``data.pkl`` (``<archive>/data.pkl``), as torch writes it."""
    f.seek(0)
    head = f.read(_LOCAL.size)
    ok = False
    if len(head) == _LOCAL.size and head[:4] == b"PK\x03\x04":
        name = f.read(_LOCAL.unpack(head)[1])
        ok = name == b"data.pkl" or name.endswith(b"/data.pkl")
    f.seek(0)
    return ok


def scan(f: IO[bytes], size: int, where: str) -> FileLayout:
    f.seek(0)
    head = f.read(4)
    if head != b"PK\x03\x04":
        if is_legacy(f):
            raise InputFileError(
                f"{where}: a legacy torch file (torch < 1.6, not a zip), which lmgc does not "
                "read; save it again with torch.save, or compress its bytes with --dtype uint8"
            )
        raise InputFileError(f"{where}: not a torch.save file (no zip header)")
    try:
        zf = zipfile.ZipFile(f)
    except ZIP_ERRORS as exc:
        raise InputFileError(f"{where}: not a valid torch.save zip ({exc})") from None
    try:
        return _scan(zf, f, size, where)
    except ZIP_ERRORS as exc:
        raise InputFileError(f"{where}: damaged torch.save file ({exc})") from None


def is_legacy(f: IO[bytes]) -> bool:
    """A torch < 1.6 file (``_use_new_zipfile_serialization=False``): a pickle whose first
    value is torch's magic number, at any pickle protocol (4 and 5 put a FRAME before it,
    0 and 1 spell it as text: only 2 and 3 were recognised)."""
    import pickletools

    f.seek(0)
    head = f.read(64)
    f.seek(0)
    try:
        for op, arg, _ in pickletools.genops(head):
            if op.name not in ("PROTO", "FRAME"):
                return op.name in ("LONG1", "LONG", "INT") and arg == _LEGACY_MAGIC
    except (ValueError, EOFError, UnicodeDecodeError, OverflowError, IndexError, struct.error):
        pass  # not a pickle
    return False


def _scan(zf: zipfile.ZipFile, f: IO[bytes], size: int, where: str) -> FileLayout:
    infos = sorted(zf.infolist(), key=lambda i: i.header_offset)
    pickles = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise InputFileError(f"{where}: not a torch.save file (no single data.pkl member)")
    prefix = pickles[0].filename[: -len("data.pkl")]
    layout = FileLayout("torch", size, [], [])
    info = _read_pickle(_member(zf, pickles[0], f, size, where), pickles[0], where, layout)
    big = _byteorder(zf, prefix, f, size, where) == "big"
    pos = 0
    for member in infos:
        if member.flag_bits & 1:
            raise InputFileError(f"{where}: member {member.filename!r} is encrypted")
        start, end = member_data_span(f, member, pos, size, where)
        key = member.filename[len(prefix) + len("data/") :]
        if (
            member.filename.startswith(prefix + "data/")
            and "/" not in key
            and member.compress_type == zipfile.ZIP_STORED
        ):  # an empty storage too: a zero-size tensor is one of the checkpoint's arrays
            layout.segments.append(file_run(f, pos, start - pos, layout, where))
            layout.tensors.append(_storage(key, member.compress_size, info, big, layout))
            layout.segments.append(Data(len(layout.tensors) - 1, start))
            pos = end
    layout.segments.append(file_run(f, pos, size - pos, layout, where))
    _unique_names(layout.tensors)
    return layout


def _member(
    zf: zipfile.ZipFile, member: zipfile.ZipInfo, f: IO[bytes], size: int, where: str
) -> Callable[[], bytes]:
    """How to read a member's bytes. torch's ``compute_crc32=False`` writes a CRC of 0, which
    zipfile calls a bad CRC-32 (the file was refused as damaged): such a stored member is read
    as it lies (its bytes are kept as they are, and the archive's checksum covers them)."""
    if member.CRC == 0 and member.compress_type == zipfile.ZIP_STORED:

        def lying() -> bytes:
            start, end = member_data_span(f, member, 0, size, where)
            f.seek(start)
            return f.read(end - start)

        return lying
    return lambda: zf.read(member)


def _read_pickle(
    read: Callable[[], bytes], member: zipfile.ZipInfo, where: str, layout: FileLayout
) -> PickleInfo | None:
    try:
        if member.file_size > MAX_PICKLE:
            raise PickleReadError(f"{member.file_size} bytes, over {MAX_PICKLE}")
        info = read_pickle(read())
    except PickleReadError as exc:
        layout.notes.append(
            f"{where}: data.pkl cannot be followed ({exc}); it is kept as it is and the "
            "storages are coded as bytes"
        )
        return None
    if info.refused:
        names = ", ".join(info.refused[:5]) + (", ..." if len(info.refused) > 5 else "")
        layout.notes.append(
            f"{where}: data.pkl asks for {names}, which is not a tensor or a plain container; "
            "nothing in it is run: it is kept as it is, and the storages are coded by the "
            "dtypes their records name"
        )
    return info


def _byteorder(zf: zipfile.ZipFile, prefix: str, f: IO[bytes], size: int, where: str) -> str:
    """``little`` unless the ``byteorder`` record says ``big`` (files before torch 1.10 have
    none and were written little-endian)."""
    try:
        member = zf.getinfo(prefix + "byteorder")
    except KeyError:
        return "little"
    text = _member(zf, member, f, size, where)()[:32].strip()
    if text not in (b"little", b"big"):
        raise InputFileError(f"{where}: byteorder record says {text[:20]!r}")
    return text.decode()


def _storage(
    key: str, nbytes: int, info: PickleInfo | None, big: bool, layout: FileLayout
) -> Tensor:
    """The storage ``data/<key>`` of ``nbytes`` bytes as a tensor: its recorded dtype (bytes
    when unknown or when the record does not fit the member), named and shaped by the tensors
    that view it when they cover it in C or Fortran order (one, or several alike:
    :func:`_tied`)."""
    ref = info.storages.get(key) if info else None
    dtype, tag = _dtype(ref, info, big)
    count = 0
    if ref is not None and dtype is not None:
        # an untyped storage's record counts bytes, a typed one's counts items
        untyped = ref.type_name == "UntypedStorage"
        count = ref.numel // dtype.itemsize if untyped else ref.numel
        if (ref.numel if untyped else ref.numel * dtype.itemsize) != nbytes or (
            count * dtype.itemsize != nbytes
        ):
            layout.notes.append(
                f"storage {key!r} holds {nbytes} bytes, its record says {ref.numel} "
                f"{ref.type_name} items: coded as bytes"
            )
            dtype = None
    if ref is None or dtype is None:
        return Tensor(f"data/{key}", np.dtype(np.uint8), (nbytes,))
    shape: tuple[int, ...] = (count,)
    name = f"data/{key}"
    # a tensor of another dtype than the storage's (an untyped storage viewed as uint16 and
    # as uint32 is coded as bytes) counts its offset, shape and strides in its own items
    own = _torch_name(ref, info)
    views = [v for v in info.views.get(key, []) if v.dtype in (None, own)]
    first = views[0] if views else None
    if not first or not all(_tied(v, first) for v in views):
        return Tensor(name, dtype, shape, tag=tag, views=_views(views, count))
    # a transposed tensor (``w.t()`` saved) covers its storage in Fortran order
    c_order = _covers(first, count)
    fortran = not c_order and len(first.shape) > 1 and _covers(first, count, True)
    if not (c_order or fortran):
        return Tensor(name, dtype, shape, tag=tag, views=_views(views, count))
    if len(first.shape) != 1 and _holds(first.shape, dtype):
        shape = first.shape
    elif fortran:  # numpy cannot shape it: named flat, its values would be out of order
        return Tensor(name, dtype, shape, tag=tag, views=_views(views, count))
    name = first.path or name
    others = [p for v in views for p in (v.path, *v.also) if p and p != name]
    aliases = tuple(dict.fromkeys(others))[:MAX_ALIASES]
    return Tensor(name, dtype, shape, tag=tag, aliases=aliases, fortran=fortran)


def _views(refs: list[TensorRef], count: int) -> tuple[View, ...]:
    """The named tensors on a storage of ``count`` items that lmgc codes as the storage (it
    gives them back by name: :class:`~lmgc_core.files.segments.View`), each of its places
    once; at most :data:`MAX_VIEWS`, and only those within the storage and no bigger."""
    out: dict[str, View] = {}
    for ref in refs:
        for path in (ref.path, *ref.also):
            view = View(path or "", ref.offset, ref.shape, ref.stride)
            if path and path not in out and view.fits(count):
                out[path] = view
    return tuple(out.values())[:MAX_VIEWS]


def _tied(view: TensorRef, first: TensorRef) -> bool:
    """``view`` has a path and sees its storage as ``first`` does, from its start: tied weights
    (an embedding and an output layer saved from one ``state_dict``) are one storage with such
    views, which name it (the first) and are its aliases (the others, and the other places of
    one tensor object saved twice)."""
    return (
        bool(view.path)
        and view.offset == 0
        and (view.shape, view.stride, view.dtype) == (first.shape, first.stride, first.dtype)
    )


def _holds(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """A tensor's shape numpy can take (torch allows more than 64 dimensions, and
    ``torch.empty(0, 2**62)``): else the storage keeps its own, 1-d."""
    try:
        check_shape(shape, dtype, "")
    except InputFileError:
        return False
    return True


def _dtype(
    ref: StorageRef | None, info: PickleInfo | None, big: bool
) -> tuple[np.dtype | None, str]:
    """The storage's dtype, and the safetensors tag of one numpy cannot spell big-endian
    (bfloat16, coded as ``>u2``: the tag says what those integers are, so a conversion writes
    bfloat16 values, not uint16 ones)."""
    if ref is None or info is None:
        return None, ""
    torch_name = _torch_name(ref, info)
    dtype = _numpy_dtype(torch_name) if torch_name else None
    if dtype is None or not big or dtype.itemsize == 1:
        return dtype, ""
    if dtype.kind in "fiuc":
        return dtype.newbyteorder(">"), ""
    return np.dtype(f">u{dtype.itemsize}"), tag_of(dtype) or ""


def _torch_name(ref: StorageRef, info: PickleInfo) -> str | None:
    """torch's name of the storage's dtype: its type's, or for an untyped storage the one its
    tensors name (``_rebuild_tensor_v3``), bytes (``uint8``) where they name several."""
    if ref.type_name != "UntypedStorage":
        return STORAGE_TYPES.get(ref.type_name)
    names = {t.dtype for t in info.views.get(ref.key, [])}
    return names.pop() if len(names) == 1 else "uint8"


def _numpy_dtype(torch_name: str) -> np.dtype | None:
    if torch_name == "bool":
        return np.dtype(np.bool_)
    if hasattr(np, torch_name) and torch_name != "bfloat16":
        return np.dtype(getattr(np, torch_name))
    try:  # an ml_dtypes type streams can name (not complex32, whose '<W4' no header takes)
        return parse_dtype(torch_name)
    except LMGCError:  # unknown, or no ml_dtypes: coded as bytes
        return None


def _covers(tensor: TensorRef, count: int, fortran: bool = False) -> bool:
    """The tensor is the whole storage in C order (or Fortran order; offset 0 is checked by the
    caller)."""
    expect, numel = 1, 1
    dims = zip(tensor.shape, tensor.stride, strict=True)
    for n, s in dims if fortran else reversed(list(dims)):
        if n != 1 and s != expect:
            return False
        expect *= n
        numel *= n
    return numel == count


def _unique_names(tensors: list[Tensor]) -> None:
    """Tensor paths and ``data/<key>`` names could meet (a dict key ``data``): later ones get
    a ``~k`` suffix, so members and conversions keep them apart; an alias or view that meets a
    name before it is dropped (the array is read under that name)."""
    seen: set[str] = set()
    for tensor in tensors:
        name, k = tensor.name, 1
        while name in seen:
            name, k = f"{tensor.name}~{k}", k + 1
        tensor.name = name
        seen.add(name)
        tensor.aliases = tuple(a for a in tensor.aliases if a not in seen)
        seen.update(tensor.aliases)
        tensor.views = tuple(v for v in tensor.views if v.name not in seen)
        seen.update(v.name for v in tensor.views)
