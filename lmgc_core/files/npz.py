"""``.npz`` (a zip of ``.npy`` members) as segments, for any zip writer, stored or deflated.

Everything but the arrays' data — local headers, ``.npy`` headers, data descriptors, the central
directory, members that are not ``.npy`` — is kept as literal bytes, so a stored (``np.savez``)
archive comes back byte for byte whatever wrote it. A deflated member
(``np.savez_compressed``) comes back byte for byte when deflating its content again with
zlib at some level reproduces the stored bytes, which :func:`scan` checks (the archive records
the level); otherwise the member's deflated bytes are kept as they are (its arrays are then not
coded), so every ``.npz`` comes back byte for byte.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from functools import partial
from typing import IO, Any

from lmgc_core.files.npy import MAGIC, holds_objects, read_header, tensor_of
from lmgc_core.files.segments import Data, Deflated, FileLayout, InputFileError, Literal, byte_run

_LOCAL = struct.Struct("<4s22xHH")
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,  # a seek to a damaged (negative) offset: EINVAL
    ValueError,
    EOFError,
    struct.error,
    NotImplementedError,
    RuntimeError,
    KeyError,
    UnicodeDecodeError,
    zlib.error,
    OverflowError,
)
"""What zipfile raises on damaged archives."""


def open_zip(f: IO[bytes], where: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(f)
    except ZIP_ERRORS as exc:
        raise InputFileError(f"{where}: not a valid zip/.npz file ({exc})") from None


def scan(f: IO[bytes], size: int, where: str) -> FileLayout:
    zf = open_zip(f, where)
    try:
        return _scan(zf, f, size, where)
    except ZIP_ERRORS as exc:
        raise InputFileError(f"{where}: damaged .npz file ({exc})") from None


def member_data_span(
    f: IO[bytes], info: zipfile.ZipInfo, pos: int, size: int, where: str
) -> tuple[int, int]:
    """Where a member's (compressed) data lies in the file, from its local header; the member
    must start at or after ``pos`` (the end of the one before) and end inside the file."""
    f.seek(info.header_offset)
    local = f.read(_LOCAL.size)
    if len(local) < _LOCAL.size or local[:4] != b"PK\x03\x04":
        raise InputFileError(f"{where}: member {info.filename!r} has no local header")
    _, name_len, extra_len = _LOCAL.unpack(local)
    start = info.header_offset + _LOCAL.size + name_len + extra_len
    end = start + info.compress_size
    if info.header_offset < pos or end > size:
        raise InputFileError(f"{where}: member {info.filename!r} overlaps or is truncated")
    return start, end


def _scan(zf: zipfile.ZipFile, f: IO[bytes], size: int, where: str) -> FileLayout:
    layout = FileLayout("npz", size, [], [])
    others: list[str] = []
    pos = 0
    for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
        if info.flag_bits & 1:
            raise InputFileError(f"{where}: member {info.filename!r} is encrypted")
        if not pos <= info.header_offset < size:
            raise InputFileError(f"{where}: member {info.filename!r} overlaps or lies outside")
        start, end = member_data_span(f, info, pos, size, where)
        layout.segments.append(file_run(f, pos, start - pos, layout, where))
        where_m = f"{where}: member {info.filename!r}"
        layout.segments.extend(_member(zf, f, info, start, layout, where_m, others))
        pos = end
    layout.segments.append(file_run(f, pos, size - pos, layout, where))
    if others and any(not t.bytes_only for t in layout.tensors):
        named = ", ".join(map(repr, others[:5])) + (", ..." if len(others) > 5 else "")
        layout.notes.append(f"{where}: what is {NOT_AN_ARRAY} is kept as it is: {named}")
    return layout


def _read_at(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise InputFileError("file ended early")
    return data


def file_run(f: IO[bytes], offset: int, n: int, layout: FileLayout, where: str) -> Literal | Data:
    """Bytes of a zip source that are not array data (records, other members, padding), kept as
    they are: a literal, or a byte tensor when large, so the manifest stays small."""
    return byte_run(partial(_read_at, f, offset, n), offset, n, layout.tensors, where)


def _member_tail(zf: zipfile.ZipFile, info: zipfile.ZipInfo, end: int) -> bytes:
    with zf.open(info) as m:
        m.seek(end)
        return m.read()


def _member(
    zf: zipfile.ZipFile,
    f: IO[bytes],
    info: zipfile.ZipInfo,
    start: int,
    layout: FileLayout,
    where: str,
    others: list[str],
) -> list[Any]:
    """Segments of one member's stored bytes; the name of a member that is not an array (with
    bytes: a folder's entry has none) is added to ``others``."""
    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    if info.compress_type == zipfile.ZIP_STORED:
        f.seek(start)
        if f.read(6) != MAGIC:
            return _kept_other(f, start, info, layout, where, others)
        f.seek(start)
        raw, header = read_header(f, where)
        if holds_objects(header):
            return _kept_pickled(f, start, info.compress_size, layout, where)
        end = _add_tensor(raw, header, name, info.compress_size, layout, where)
        segments: list[Any] = [Literal(raw), Data(len(layout.tensors) - 1, start + len(raw))]
        if info.compress_size > end:  # bytes after the array: kept
            segments.append(file_run(f, start + end, info.compress_size - end, layout, where))
        return segments
    if info.compress_type != zipfile.ZIP_DEFLATED:
        layout.notes.append(
            f"{where} uses zip method {info.compress_type}: kept as it is ({NOT_CODED})"
        )
        return [file_run(f, start, info.compress_size, layout, where)]
    with zf.open(info) as m:
        if m.read(6) != MAGIC:
            return _kept_other(f, start, info, layout, where, others)
        m.seek(0)
        if holds_objects(read_header(m, where)[1]):
            return _kept_pickled(f, start, info.compress_size, layout, where)
    level = _deflate_level(zf, f, info, start)
    if level is None:  # no level of this zlib gives its bytes: kept as they are, so that
        layout.notes.append(f"{where} {_why_kept(f, start)}")  # the file still
        return [file_run(f, start, info.compress_size, layout, where)]  # comes back as it was
    with zf.open(info) as m:
        raw, header = read_header(m, where)
    end = _add_tensor(raw, header, name, info.file_size, layout, where)
    inner: list[Any] = [Literal(raw), Data(len(layout.tensors) - 1, len(raw))]
    if info.file_size > end:  # offsets within the member: label the byte tensor with its name
        read = partial(_member_tail, zf, info, end)
        n = info.file_size - end
        inner.append(byte_run(read, end, n, layout.tensors, where, f"{info.filename}+"))
    return [Deflated(start, info.compress_size, level, inner, member=info)]


def _kept_other(
    f: IO[bytes],
    start: int,
    info: zipfile.ZipInfo,
    layout: FileLayout,
    where: str,
    others: list[str],
) -> list[Literal | Data]:
    """A member that is not an array (a README, a config), kept as its bytes and named in
    ``others``: a conversion writes arrays only, and says it leaves these out (numpy's
    ``np.load`` lists them)."""
    if info.compress_size:
        others.append(info.filename)
    return [file_run(f, start, info.compress_size, layout, where)]


def _kept_pickled(
    f: IO[bytes], start: int, size: int, layout: FileLayout, where: str
) -> list[Literal | Data]:
    """A member of pickled Python objects (``np.savez`` of an object array), kept as its bytes
    with a note: the whole file was refused, its other arrays with it."""
    layout.notes.append(f"{where} holds Python objects (pickled): kept as it is ({NOT_CODED})")
    return [file_run(f, start, size, layout, where)]


def _add_tensor(
    raw: bytes, header: dict[str, Any], name: str, member_size: int, layout: FileLayout, where: str
) -> int:
    """Record the member's tensor; returns where its data ends within the member."""
    tensor = tensor_of(header, name, where)
    end = len(raw) + tensor.nbytes
    if member_size < end:
        raise InputFileError(f"{where}: truncated array ({member_size} bytes, needs {end})")
    layout.tensors.append(tensor)
    return end


LEVELS = (zlib.Z_DEFAULT_COMPRESSION, 1, 2, 3, 4, 5, 7, 8, 9, 0)
"""The zlib levels tried, most likely first: the default (``np.savez_compressed``, zipfile),
then the others zipfile's ``compresslevel`` gives (6 is the default's own output)."""
DEFLATE_PIECE = 1 << 20
"""The pieces a member's content is deflated again in, when tested here and when rebuilt:
level 0's stored blocks end where the calls split the content (the other levels' output does
not depend on it), so only a level-0 member written in such pieces (one piece, for a member
of at most 1 MiB) is coded; one written otherwise is kept as it is."""
NOT_CODED = "its arrays are not coded"
"""The words every note of a member kept as its bytes ends in (a conversion leaves it out)."""
NOT_AN_ARRAY = "not an array"
"""The words of the note naming members that are not arrays (a conversion leaves them out)."""


def _why_kept(f: IO[bytes], start: int) -> str:
    """The note for a deflated member kept as its deflated bytes."""
    f.seek(start)
    first = f.read(1)
    if first and (first[0] >> 1) & 3 == 0:  # stored blocks: level 0, split otherwise
        return (
            "was deflated at level 0 in pieces of other sizes than lmgc rebuilds it in: kept "
            f"as its deflated bytes, as large as its arrays ({NOT_CODED})"
        )
    return (
        "was deflated by a program whose output this machine's zlib does not reproduce at any "
        f"level (another zip program or zlib build): kept as its deflated bytes ({NOT_CODED})"
    )


def _deflate_level(
    zf: zipfile.ZipFile, f: IO[bytes], info: zipfile.ZipInfo, start: int
) -> int | None:
    """The first zlib level of :data:`LEVELS` whose deflate of the member's content gives back
    exactly its stored bytes (what the archive records, to rebuild them); ``None`` when none
    does (another deflate implementation). A level that differs is found out at its first
    differing output, so trying them all costs little more than one pass."""
    for level in LEVELS:
        if _redeflates(zf, f, info, start, level):
            return level
    return None


def _redeflates(
    zf: zipfile.ZipFile, f: IO[bytes], info: zipfile.ZipInfo, start: int, level: int
) -> bool:
    """Does deflating the member's content with zlib at ``level`` give back exactly its stored
    bytes?"""
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    done = 0
    with zf.open(info) as m:
        while True:
            chunk = m.read(DEFLATE_PIECE)
            out = packer.compress(chunk) if chunk else packer.flush()
            if out:
                f.seek(start + done)
                if f.read(len(out)) != out:
                    return False
                done += len(out)
            if not chunk:
                break
    return done == info.compress_size
