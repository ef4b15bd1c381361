"""A strict reading of the zip file an lmgc archive is, so that no damaged or crafted archive is
taken for a different valid one.

``zipfile`` trusts the central directory: a flipped bit there can hide a member (the manifest),
point two entries at one record, or let bytes in between go unread. :func:`scan_zip` instead
reads the file from both ends and requires them to agree exactly:

* from offset 0, local file headers and their data back to back, no gaps, up to the central
  directory;
* the central directory, entry for entry the same names, order, offsets, flags, methods, sizes
  and CRCs, then the end record (Zip64 end record and locator where the sizes need them), and
  nothing after it (no comments);
* and ``zipfile``'s own reading of the central directory, which other tools share.

Member names must be plain relative names (see :func:`check_name`). See ``docs/format.md``.
"""

from __future__ import annotations

import struct
import unicodedata
import zipfile
from dataclasses import dataclass
from typing import IO

from lmgc_core.util.errors import StreamError

LOCAL = struct.Struct("<4sHHHHHIIIHH")
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
END = struct.Struct("<4sHHHHIIH")
END64 = struct.Struct("<4sQHHIIQQQQ")
LOCATOR = struct.Struct("<4sIQI")
LOCAL_SIG, CENTRAL_SIG = b"PK\x03\x04", b"PK\x01\x02"
END_SIG, END64_SIG, LOCATOR_SIG = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
UTF8_FLAG = 0x800
"""The only general-purpose flag allowed: names in UTF-8. Data descriptors (bit 3, sizes after
the data), encryption and the rest are refused: lmgc writes none of them."""
MAX_MEMBERS = 1 << 17
"""Most members an archive may have: one per tensor chunk, so 131,072 chunks hold 2 TiB at the
default 16 MiB chunk size, or 131,072 small tensors. Reading one costs ~1 KB of bookkeeping and
~40 us here (its local header, its central entry and zipfile's), so the cap bounds both;
:class:`~lmgc_core.files.archive.ArchiveWriter` never writes more."""
MAX_NAME = 1024
"""Longest member name, in characters."""
MAX_ENTRY = 46 + 4 * MAX_NAME + 4 + 24
"""Largest central directory entry: the fixed part, a name of UTF-8 characters, a Zip64 record
of three values (and no comment), so the central directory read at once is bounded too."""
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    struct.error,
    NotImplementedError,
    UnicodeDecodeError,
)


@dataclass(frozen=True)
class ZipMember:
    """One member as both the local header and the central directory record it."""

    name: str
    offset: int
    """Offset of the local header."""
    data_offset: int
    method: int
    size: int
    """Bytes stored in the archive (``compress_size``)."""
    file_size: int
    crc: int


def check_name(name: str, where: str) -> None:
    """Refuse a member name that is not a plain relative name: empty, absolute, a ``.``, ``..``
    or empty path component, any ``\\`` (a Windows separator), control characters (NUL,
    newlines, terminal escapes) or over :data:`MAX_NAME` characters. ``/`` between plain
    components stays allowed: lmgc before archive format 2 named members after tensors, and
    tensor names such as ``params/dense/kernel`` are common."""
    bad = (
        len(name) > MAX_NAME
        or "\\" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
        or any(unicodedata.category(c) == "Cc" for c in name)
    )
    if bad:
        raise StreamError(f"{where}: archive member name {name!r} is not a plain relative name")


def _read(f: IO[bytes], offset: int, n: int, where: str) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise StreamError(f"{where}: corrupted lmgc archive (ends inside a zip record)")
    return data


def _zip64(extra: bytes, values: list[int], wide: list[int], where: str) -> list[int]:
    """Extra fields parsed; ``values[i]`` replaced from the Zip64 field where it is
    ``wide[i]`` (0xFFFFFFFF), in order, as the zip specification says. The only extra field
    allowed is one Zip64 record (all zipfile writes), holding exactly the values it replaces,
    or all of them in order (zipfile writes both sizes in a local header it expects to grow past
    4 GiB; any that was not replaced must then agree)."""
    out, pos, seen = list(values), 0, False
    need = [i for i, (v, w) in enumerate(zip(values, wide, strict=True)) if v == w]
    while pos < len(extra):
        if pos + 4 > len(extra):
            raise StreamError(f"{where}: corrupted lmgc archive (bad zip extra field)")
        kind, n = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + n]
        if len(body) != n:
            raise StreamError(f"{where}: corrupted lmgc archive (bad zip extra field)")
        if kind != 1:
            raise StreamError(f"{where}: corrupted lmgc archive (zip extra field {kind:#06x})")
        held = need if n == 8 * len(need) else list(range(len(values)))
        if seen or n != 8 * len(held):
            raise StreamError(f"{where}: corrupted lmgc archive (bad Zip64 field)")
        for k, i in enumerate(held):
            (value,) = struct.unpack_from("<Q", body, 8 * k)
            if i not in need and value != values[i]:
                raise StreamError(f"{where}: corrupted lmgc archive (bad Zip64 field)")
            out[i] = value
        seen = True
        pos += 4 + n
    if need and not seen:
        raise StreamError(f"{where}: corrupted lmgc archive (Zip64 sizes missing)")
    return out


def _decode_name(raw: bytes, flags: int, where: str) -> str:
    try:
        return raw.decode("utf-8" if flags & UTF8_FLAG else "cp437")  # as zipfile does
    except UnicodeDecodeError:
        raise StreamError(f"{where}: corrupted lmgc archive (member name is not UTF-8)") from None


def _end_records(f: IO[bytes], size: int, where: str) -> tuple[int, int, int]:
    """``(entries, central directory offset, its end)`` from the end record (and the Zip64 end
    record when a locator precedes it). The end record must close the file: no comment."""
    bad = f"{where}: corrupted lmgc archive"
    if size < END.size:
        raise StreamError(f"{bad} (too short for a zip)")
    sig, disk, cd_disk, n_here, n, cd_size, cd_offset, comment = END.unpack(
        _read(f, size - END.size, END.size, where)
    )
    if sig != END_SIG or comment:
        raise StreamError(f"{bad} (no zip end record at the end of the file)")
    if disk or cd_disk or n_here != n:
        raise StreamError(f"{bad} (zip end record names other disks)")
    cd_end = size - END.size
    top = END.size + LOCATOR.size + END64.size
    if size >= top and _read(f, size - END.size - LOCATOR.size, 4, where) == LOCATOR_SIG:
        _, disk64, at, disks = LOCATOR.unpack(
            _read(f, size - END.size - LOCATOR.size, LOCATOR.size, where)
        )
        cd_end = size - top
        if disk64 or disks != 1 or at != cd_end:
            raise StreamError(f"{bad} (bad Zip64 locator)")
        sig, rest, _, _, disk, cd_disk, n_here64, n64, size64, offset64 = END64.unpack(
            _read(f, at, END64.size, where)
        )
        if sig != END64_SIG or rest != END64.size - 12 or disk or cd_disk or n_here64 != n64:
            raise StreamError(f"{bad} (bad Zip64 end record)")
        for short, wide, top_value in (
            (n, n64, 0xFFFF),
            (cd_size, size64, 0xFFFFFFFF),
            (cd_offset, offset64, 0xFFFFFFFF),
        ):
            if short not in (wide, top_value):
                raise StreamError(f"{bad} (Zip64 end record disagrees with the end record)")
        n, cd_size, cd_offset = n64, size64, offset64
    if cd_offset + cd_size != cd_end:
        raise StreamError(f"{bad} (the central directory does not end at the end record)")
    if n > MAX_MEMBERS or not n * CENTRAL.size <= cd_size <= n * MAX_ENTRY:
        raise StreamError(f"{bad} (zip end record lists {n} members)")
    return n, cd_offset, cd_end


def _central(cd: bytes, n: int, where: str) -> list[tuple[bytes, int, int, int, int, int, int]]:
    """``(name, flags, method, crc, size, file_size, offset)`` of each central entry."""
    bad = f"{where}: corrupted lmgc archive"
    out, pos = [], 0
    for _ in range(n):
        if pos + CENTRAL.size > len(cd):
            raise StreamError(f"{bad} (central directory is cut short)")
        (
            sig,
            _,
            _,
            flags,
            method,
            _,
            _,
            crc,
            size,
            file_size,
            n_name,
            n_extra,
            n_comment,
            disk,
            _,
            _,
            offset,
        ) = CENTRAL.unpack_from(cd, pos)
        if sig != CENTRAL_SIG or n_comment or disk:
            raise StreamError(f"{bad} (bad central directory entry)")
        pos += CENTRAL.size
        name = cd[pos : pos + n_name]
        extra = cd[pos + n_name : pos + n_name + n_extra]
        pos += n_name + n_extra
        if pos > len(cd):
            raise StreamError(f"{bad} (central directory is cut short)")
        wide = [0xFFFFFFFF] * 3
        file_size, size, offset = _zip64(extra, [file_size, size, offset], wide, where)
        out.append((name, flags, method, crc, size, file_size, offset))
    if pos != len(cd):
        raise StreamError(f"{bad} ({len(cd) - pos} unexplained bytes in the central directory)")
    return out


def scan_zip(f: IO[bytes], size: int, where: str) -> list[ZipMember]:
    """The members of the zip on seekable ``f`` (``size`` bytes), after the checks in the
    module docstring; any disagreement is a :class:`StreamError`."""
    bad = f"{where}: corrupted lmgc archive"
    n, cd_offset, cd_end = _end_records(f, size, where)
    central = _central(_read(f, cd_offset, cd_end - cd_offset, where), n, where)
    members: list[ZipMember] = []
    names: set[str] = set()
    pos = 0
    for raw_name, flags, method, crc, stored, file_size, offset in central:
        if flags & ~UTF8_FLAG:
            raise StreamError(f"{bad} (zip flags {flags:#x}: data descriptor or encryption)")
        if pos + LOCAL.size > cd_offset:
            raise StreamError(f"{bad} (local headers run into the central directory)")
        (sig, _, l_flags, l_method, _, _, l_crc, l_size, l_file_size, n_name, n_extra) = (
            LOCAL.unpack(_read(f, pos, LOCAL.size, where))
        )
        local_name = _read(f, pos + LOCAL.size, n_name, where)
        extra = _read(f, pos + LOCAL.size + n_name, n_extra, where)
        l_file_size, l_size = _zip64(extra, [l_file_size, l_size], [0xFFFFFFFF] * 2, where)
        same = (raw_name, flags, method, crc, stored, file_size, pos) == (
            local_name,
            l_flags,
            l_method,
            l_crc,
            l_size,
            l_file_size,
            offset,
        )
        if sig != LOCAL_SIG or not same:
            raise StreamError(
                f"{bad} (member {len(members)}: local header and central directory disagree)"
            )
        name = _decode_name(raw_name, flags, where)
        check_name(name, where)
        if name in names:
            raise StreamError(f"{where}: archive has two members named {name!r}")
        names.add(name)
        data = pos + LOCAL.size + n_name + n_extra
        pos = data + stored
        if pos > cd_offset:
            raise StreamError(f"{bad} (member {name!r} runs into the central directory)")
        members.append(ZipMember(name, offset, data, method, stored, file_size, crc))
    if pos != cd_offset:
        raise StreamError(
            f"{bad} ({cd_offset - pos} unexplained bytes before the central directory)"
        )
    _agree_with_zipfile(f, members, where)
    return members


def _agree_with_zipfile(f: IO[bytes], members: list[ZipMember], where: str) -> None:
    """``zipfile`` (what ``unzip``-like tools see) must read the same members."""
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except ZIP_ERRORS as exc:
        raise StreamError(f"{where}: corrupted lmgc archive ({exc})") from None
    theirs = [
        (i.filename, i.header_offset, i.compress_type, i.compress_size, i.file_size, i.CRC)
        for i in infos
    ]
    ours = [(m.name, m.offset, m.method, m.size, m.file_size, m.crc) for m in members]
    if theirs != ours:
        raise StreamError(f"{where}: corrupted lmgc archive (zipfile reads other members)")
