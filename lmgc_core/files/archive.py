"""The file the CLI writes: an uncompressed zip of ordinary lmgc streams plus a manifest.

* ``<tensor>.lmgc`` (or ``<tensor>@<i>.lmgc`` when a large tensor is cut into chunks): one lmgc
  stream per chunk, each independently decodable with :func:`lmgc_core.decompress`;
* ``__lmgc__.json`` (deflated, written last): the source format, name, size and SHA-256, the
  tensors in the source's member order with their chunk members, the segments — the source's
  literal bytes (headers, zip records) between the tensors' data — from which
  ``lmgc decompress`` writes the source back byte for byte, and (version 2) every other member's
  name, size and CRC-32, so the manifest vouches for the whole archive.

:class:`ArchiveReader` also reads a bare stream (what ``Pipeline.compress`` returns) and zips
written before the manifest existed (members ``<name>.lmgc``, no source format), but only when
the file proves it is one. Nothing is trusted before it is checked: the zip's structure
(:func:`~lmgc_core.files.zip_scan.scan_zip`), the manifest's size and shape, every member against
the
manifest. See ``docs/format.md``.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from lmgc_core.files import compact, zip_scan
from lmgc_core.files.segments import (
    FORMATS,
    Data,
    Deflated,
    FileLayout,
    InputFileError,
    Segment,
    Tensor,
    chunk_count,
    segments_from_json,
)
from lmgc_core.files.source_hash import positional_fd
from lmgc_core.files.zip_scan import MAX_NAME, ZipMember, scan_zip
from lmgc_core.stream import container
from lmgc_core.util.errors import StreamError

ZIP_MAGIC = b"PK\x03\x04"
SUFFIX = ".lmgc"
MANIFEST = "__lmgc__.json"
ARCHIVE_VERSION = 4
"""Version 3 writes a single-array ``.npy`` or raw source in the compact form
(:mod:`lmgc_core.files.compact`: one bare stream whose header carries a ``file`` record) and
marks a manifest coded against a base (:data:`BASE_VERSION`); every other zip is version 2's,
byte for byte (:data:`MANIFEST_VERSION`). Version 4 lists a ``torch.save`` file's 0-d tensor
(AdamW's ``step``) with its shape ``()``, where version 3 coded and listed it as ``(1,)`` (the
same bytes either way; a manifest's ``lmgc_archive`` stays the oldest reader that reads it,
and every reader takes a 0-d shape), and its tied weights (one storage viewed whole, alike, by
several tensors) as one array named by the first with its shape, the others its ``aliases``
(an additive tensor key: a reader before it reads one tensor and rebuilds the same file), and
a tensor that is its storage in Fortran order (``w.t()`` saved) named and shaped, Fortran-ordered
as a ``.npy`` can be, and the other tensors on a storage as its ``views`` (an additive key too)."""
MANIFEST_VERSION = 2
"""The ``lmgc_archive`` of a manifest without a base: the oldest reader that reads it."""
READ_VERSIONS = (1, 2, 3)
BASE_VERSION = 3
"""The version of an archive coded against a base (``--base``), whatever
:data:`ARCHIVE_VERSION`: earlier readers would not know that its members need the base."""
MAX_MANIFEST = 64 << 20
"""Cap on the manifest's JSON text (inflated): literal segments over 64 KiB are byte tensors,
so a real manifest is ~200 bytes per tensor and chunk; inflating stops one byte past the cap."""
MAX_MANIFEST_VALUES = 1 << 21
"""Cap on the JSON values (containers, numbers, strings) in the manifest, counted on the text
before it is parsed: ~150 MB of Python objects at most; a real manifest has ~20 per tensor."""
MAX_MANIFEST_DEPTH = 32
"""Cap on JSON nesting in the manifest (real ones nest ~5 deep, safetensors metadata aside)."""
STORED, DEFLATED = 0, 8
PREMANIFEST_STREAM = 1
"""The stream format version of every member lmgc wrote into a zip without a manifest (the
manifest came on 2026-11-23, stream format 2 on 2026-12-01)."""


@dataclass
class Entry:
    """One tensor of an archive and the members holding its chunks, in order."""

    name: str
    members: list[str]
    tensor: Tensor | None = None
    """None for a bare stream or a pre-manifest archive (known after decoding)."""
    chunk_shapes: list[tuple[int, ...]] | None = None
    """The shape each member must hold (``io.chunk_shapes``), once a member was checked."""


def plain_member_name(tensor_name: str) -> str:
    """A member name the reader accepts (:func:`~lmgc_core.files.zip_scan.check_name`) for any
    tensor name: separators and control characters become ``_``, long names are cut. The
    manifest, not the member name, says which tensor a member holds."""
    name = "".join(
        "_" if c in "/\\" or not (c.isprintable() or c == " ") else c for c in tensor_name
    )
    name = name[: MAX_NAME // 4] or "array"  # "": a .npy or raw file's one nameless array
    return "_" + name if name in (".", "..") else name


class ArchiveWriter:
    """Streams chunk members into a zip on ``f``, then the manifest, which lists them all."""

    def __init__(self, f: IO[bytes]) -> None:
        self._zip = zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._names: set[str] = {MANIFEST}
        self.members: list[list[Any]] = []
        """``[name, size, crc32]`` of every member added, in zip order."""

    def member_name(self, tensor_name: str, index: int, count: int) -> str:
        base = plain_member_name(tensor_name)
        base = base if count == 1 else f"{base}@{index}"
        name, k = base + SUFFIX, 1
        while name in self._names:  # tensor names may collide with chunk names
            name, k = f"{base}~{k}{SUFFIX}", k + 1
        self._names.add(name)
        return name

    def check_room(self, more: int, tensors: int = 0) -> None:
        """Refuse ``more`` members past the cap readers take (the manifest is one more).
        ``tensors``: how many of them are tensors, one member each whatever the chunk size,
        so that a file of too many tensors is not told to use a larger ``--chunk-size``."""
        cap = zip_scan.MAX_MEMBERS
        if tensors + 1 > cap:
            raise InputFileError(
                f"{tensors} tensors, one archive member each: over the {cap} members lmgc "
                "reads; compress the file's bytes as raw data (--dtype uint8) or split it"
            )
        if len(self.members) + more + 1 > cap:
            raise InputFileError(
                f"over {cap} archive members (one per tensor chunk): more than lmgc reads; "
                "use a larger --chunk-size"
            )

    def add(self, name: str, blob: bytes) -> None:
        self.check_room(1)
        info = _info(name)
        self._zip.writestr(info, blob)  # sets info.CRC: one pass over the blob, not two
        self.members.append([name, len(blob), info.CRC])

    def abort(self) -> None:
        """Drop the archive unfinished (its output is being discarded): the zip then never tries
        to write its central directory, neither here nor when it is garbage-collected, on a
        file that may be closed by then."""
        self._zip.fp = None  # ZipFile.close() and __del__ do nothing without a file

    def close(self, manifest: dict[str, Any]) -> None:
        manifest = {**manifest, "members": self.members}
        text = json.dumps(manifest, separators=(",", ":")).encode()
        info = _info(MANIFEST)
        info.compress_type = DEFLATED
        self._zip.writestr(info, text)
        self._zip.close()


def _info(name: str) -> zipfile.ZipInfo:
    """A member entry with a fixed date, so the same input gives the same archive bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def manifest_for(
    layout: FileLayout,
    source: dict[str, Any],
    members: list[list[str]],
    chunk_bytes: int,
    base: dict[str, Any] | None = None,
    coded_against: dict[int, str] | None = None,
) -> dict[str, Any]:
    """The manifest; :meth:`ArchiveWriter.close` adds the ``members`` list. ``base``: the
    reference file's name, size and SHA-256 (``--base``); ``coded_against``: tensor index -> the
    base tensor it was coded against. Both only in an archive coded against a base."""
    tensors = [{**t.to_json(), "members": m} for t, m in zip(layout.tensors, members, strict=True)]
    for index, name in (coded_against or {}).items():
        tensors[index]["base"] = name
    manifest = {
        "lmgc_archive": MANIFEST_VERSION,
        "format": layout.format,
        "source": source,
        "identical": layout.identical,
        "notes": layout.notes,
        "chunk_bytes": chunk_bytes,
        "tensors": tensors,
        "segments": layout.segments_json(),
        "metadata": layout.metadata,
    }
    if base is not None:  # only then: every other archive keeps its bytes
        manifest["lmgc_archive"] = max(MANIFEST_VERSION, BASE_VERSION)
        manifest["base"] = base
    return manifest


# -- reading ---------------------------------------------------------------------------------------


class ArchiveReader:
    """Read side of an lmgc file: an archive (with or without manifest) or a bare stream.
    ``f`` must be seekable and stay open while the reader is used; every structural check
    runs here, before anything is decoded."""

    def __init__(self, f: IO[bytes], where: str) -> None:
        self.where = where
        self.format: str | None = None
        self.version: int | None = None
        self.source: dict[str, Any] = {}
        self.identical = False
        self.notes: list[str] = []
        self.metadata: dict[str, Any] | None = None
        self.segments: list[Segment] | None = None
        self.chunk_bytes: int | None = None
        self.compact = False
        """A single-array file in the compact form: one stream with a ``file`` record."""
        self.heads: dict[str, tuple[dict[str, Any], int]] = {}
        """Stream headers parsed here (a bare stream's), by member name, for their decoding."""
        self.base: dict[str, Any] | None = None
        """The file the archive was coded against (``--base``: name, size, SHA-256), or None."""
        self.coded_against: dict[int, str] = {}
        """Tensor index -> the base tensor it was coded against."""
        self.crc32: Callable[[bytes], int] | None = None
        """A faster function with ``zlib.crc32``'s values for the members' zip CRC-32 (the
        decoding pipeline's prior may offer one, ``block_crc32``); ``None``: zlib's."""
        self._f = f
        self._fd = positional_fd(f)
        self._lock = threading.Lock()
        self._members: dict[str, ZipMember] = {}
        f.seek(0, 2)
        self.size = f.tell()
        f.seek(0)
        head = f.read(4)
        if head == ZIP_MAGIC:
            self.kind = "archive"
            self._open_zip()
        elif head == container.MAGIC or not head:
            self.kind = "stream"
            self.entries = [Entry("", [""])]
            self._open_stream()  # an empty file too: refused here, before anything is said
        else:
            raise StreamError(f"{where}: not an lmgc stream or archive (bad magic)")

    def _open_stream(self) -> None:
        """A bare stream: its header (read alone, verified and parsed once), and when it carries
        a ``file`` record, the compact form of a single-array source (archive version 3)."""
        with self._lock:
            self._f.seek(0)
            prefix = self._f.read(9)
            length = int.from_bytes(prefix[5:9], "little") if len(prefix) == 9 else 0
            self._f.seek(0)
            blob = self._f.read(9 + min(length, container.MAX_HEADER) + 4)
        head = container.read_header(blob)  # too short, corrupted: refused here, named
        self.heads[""] = head
        if compact.FILE_KEY not in head[0]:
            return
        record = compact.parse_record(head[0][compact.FILE_KEY], self.where)
        self.compact, self.version, self.identical = True, 3, True
        self.format, self.segments = record.format, record.segments
        if record.tensor is not None:  # .npy: the stream must hold exactly the array it declares
            self.entries[0].tensor = record.tensor
            self.chunk_bytes = max(1, record.tensor.nbytes)  # one chunk: the whole array
            self.source = {"size": len(record.head) + record.tensor.nbytes}
        else:  # raw: the file is the array's bytes, as many as the header declares
            from lmgc_core.coding.declared import declared_array

            dtype, shape = declared_array(head[0])
            self.source = {"size": dtype.itemsize * int(np.prod(shape, dtype=object))}

    def _open_zip(self) -> None:
        members = scan_zip(self._f, self.size, self.where)
        self._members = {m.name: m for m in members}
        if not members:
            raise StreamError(f"{self.where}: a zip without lmgc members")
        if MANIFEST in self._members:
            if members[-1].name != MANIFEST:
                raise StreamError(f"{self.where}: corrupted lmgc archive (manifest not last)")
            data = members[:-1]
            for m in data:
                self._check_stored(m)
            self._read_manifest(data)
        else:  # written before the manifest existed: one stream per array, no source format
            for m in members:
                self._check_stored(m)
                if not m.name.endswith(SUFFIX):
                    raise StreamError(
                        f"{self.where}: a zip without a manifest whose member {m.name!r} is not "
                        "an lmgc stream"
                    )
                self._check_premanifest(m)
            self.entries = [Entry(m.name[: -len(SUFFIX)], [m.name]) for m in members]

    def _check_premanifest(self, m: ZipMember) -> None:
        """A zip without a manifest is read only when lmgc could have written it so: before
        the manifest existed, when every stream was format version 1 (:data:`PREMANIFEST_STREAM`).
        A newer stream in it means the manifest is gone (the last member, the first a cut
        loses; a zip "repaired" or rewritten without it): read as a zip of streams, such an
        archive would decode with exit 0 into another file -- no source format, chunks as
        separate arrays, tensors missing."""
        prefix = self._read(m, 5)
        if len(prefix) < 5 or prefix[:4] != container.MAGIC:
            raise StreamError(f"{self.where}: archive member {m.name!r} is not an lmgc stream")
        if prefix[4] != PREMANIFEST_STREAM:
            raise StreamError(
                f"{self.where}: corrupted lmgc archive: a zip of lmgc streams without a "
                f"manifest, but member {m.name!r} is stream format {prefix[4]}, written after "
                "archives had a manifest (its manifest is missing)"
            )

    def _check_stored(self, m: ZipMember) -> None:
        if m.method != STORED or m.size != m.file_size:
            raise StreamError(
                f"{self.where}: archive member {m.name!r} is compressed (method {m.method}); "
                "lmgc stores its streams"
            )

    def _manifest_text(self) -> bytes:
        m = self._members[MANIFEST]
        bad = f"{self.where}: corrupted lmgc archive"
        if m.method not in (STORED, DEFLATED) or m.file_size > MAX_MANIFEST:
            raise StreamError(f"{bad}: manifest of {m.file_size} bytes (method {m.method})")
        raw = self._read(m)
        if m.method == STORED:
            text = raw
        else:
            unpacker = zlib.decompressobj(-15)
            try:  # at most one byte past the cap: a deflate bomb stops here
                text = unpacker.decompress(raw, MAX_MANIFEST + 1)
                if len(text) <= MAX_MANIFEST and not unpacker.unconsumed_tail:
                    text += unpacker.flush()
            except zlib.error as exc:
                raise StreamError(f"{bad}: unreadable manifest ({exc})") from None
            if len(text) > MAX_MANIFEST or unpacker.unconsumed_tail:
                raise StreamError(f"{bad}: manifest inflates to over {MAX_MANIFEST} bytes")
            if not unpacker.eof or unpacker.unused_data:
                raise StreamError(f"{bad}: manifest is not one whole deflate stream")
        if len(text) != m.file_size or zlib.crc32(text) != m.crc:
            raise StreamError(f"{bad}: manifest is corrupted (size or CRC-32 mismatch)")
        return text

    def _read_manifest(self, data: list[ZipMember]) -> None:
        bad = f"{self.where}: corrupted lmgc archive"
        text = self._manifest_text()
        container.check_json_text(
            text, f"{bad}: manifest", MAX_MANIFEST, MAX_MANIFEST_VALUES, MAX_MANIFEST_DEPTH
        )
        try:
            manifest = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StreamError(f"{bad}: unreadable manifest ({exc})") from None
        del text
        version = manifest.get("lmgc_archive") if isinstance(manifest, dict) else None
        if type(version) is not int or version not in READ_VERSIONS:
            raise StreamError(f"{bad}: unknown manifest version")
        self.version = version
        try:
            self.format = manifest["format"]
            if self.format not in FORMATS:
                raise StreamError(f"{bad}: unknown source format {self.format!r}")
            self.source = dict(manifest["source"])
            self.identical = manifest["identical"] is True
            self.notes = [str(n) for n in manifest.get("notes", [])]
            metadata = manifest.get("metadata")
            self.metadata = metadata if isinstance(metadata, dict) else None
            chunk_bytes = manifest["chunk_bytes"]
            if type(chunk_bytes) is not int or chunk_bytes < 1:
                raise ValueError(f"chunk_bytes {chunk_bytes!r}")
            self.chunk_bytes = chunk_bytes
            items = manifest["tensors"]
            if not isinstance(items, list):
                raise TypeError("tensors must be a list")
            if version >= 2:
                self._check_member_list(manifest["members"], data)
            if not all(isinstance(item["members"], list) for item in items):
                raise TypeError("a tensor's members must be a list")
            refs = [m for item in items for m in item["members"]]
            if len(refs) != len(data) or not all(isinstance(m, str) for m in refs):
                raise StreamError(
                    f"{bad}: the manifest's tensors name {len(refs)} members, the zip holds "
                    f"{len(data)}"
                )
            if sorted(refs) != sorted(m.name for m in data):  # each member exactly once
                raise StreamError(f"{bad}: the manifest's tensors do not name each member once")
            self.entries = []
            for item in items:
                tensor = Tensor.from_json(item)
                members = list(item["members"])
                if len(members) != chunk_count(tensor, chunk_bytes):
                    raise StreamError(
                        f"{bad}: tensor {tensor.name!r} has {len(members)} members, its size "
                        f"makes {chunk_count(tensor, chunk_bytes)} chunks"
                    )
                self.entries.append(Entry(tensor.name, members, tensor))
            self._check_aliases(bad)
            self.segments = segments_from_json(manifest["segments"], len(self.entries))
            self._read_base(manifest.get("base"), items, version)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            if isinstance(exc, StreamError):
                raise
            raise StreamError(f"{bad}: bad manifest ({exc})") from None
        self._check_segments(bad)

    def _check_aliases(self, bad: str) -> None:
        """An alias (another name of a tied array) or a view names no other array: a forged
        one would make a name read one array here and another in a conversion."""
        names = [e.tensor.name for e in self.entries if e.tensor is not None]
        aliases = [
            a
            for e in self.entries
            if e.tensor is not None
            for a in (*e.tensor.aliases, *(v.name for v in e.tensor.views))
        ]
        if aliases and len(set(names + aliases)) != len(set(names)) + len(aliases):
            raise StreamError(
                f"{bad}: a tensor's alias or view is another tensor's name, or repeated"
            )

    def _read_base(self, base: Any, items: list[Any], version: int) -> None:
        """The base file's record (version 3) and what each tensor was coded against."""
        if base is not None and (
            version < BASE_VERSION
            or not isinstance(base, dict)
            or not isinstance(base.get("name"), str)
            or type(base.get("size")) is not int
            or not isinstance(base.get("sha256"), str)
        ):
            raise ValueError(f"bad base record {base!r} (version {version})")
        self.base = base
        for index, item in enumerate(items):
            if "base" in item:
                if base is None or not isinstance(item["base"], str):
                    raise ValueError(f"tensor {index} names base {item['base']!r}")
                self.coded_against[index] = item["base"]

    def _check_member_list(self, listed: Any, data: list[ZipMember]) -> None:
        """Version 2: the manifest lists every other member, with its size and CRC-32."""
        want = [[m.name, m.file_size, m.crc] for m in data]
        if not isinstance(listed, list) or listed != want:
            raise StreamError(
                f"{self.where}: corrupted lmgc archive: the zip's members are not the ones "
                "its manifest lists"
            )

    def _check_segments(self, bad: str) -> None:
        """Each tensor in the segments exactly once, so a rebuild decodes each member once, and
        a tensor in every deflated segment (an .npz member's array: 400,000 empty ones each set
        up a zlib compressor, 20 s for a 22 KB archive)."""
        seen: list[int] = []

        def walk(segments: list[Segment]) -> None:
            for seg in segments:
                if isinstance(seg, Data):
                    seen.append(seg.index)
                elif isinstance(seg, Deflated):
                    if not any(isinstance(inner, Data) for inner in seg.segments):
                        raise StreamError(f"{bad}: a deflated segment holds no tensor")
                    walk(seg.segments)

        walk(self.segments or [])
        if sorted(seen) != list(range(len(self.entries))):
            raise StreamError(f"{bad}: the manifest's segments do not place each tensor once")

    def _read(self, m: ZipMember, size: int | None = None) -> bytes:
        """The first ``size`` bytes (default: all) of a member's data. Positional reads where
        the file allows them, so decoding threads read their members side by side (the reads
        release the GIL); else under a lock, since they share the file position."""
        n = m.size if size is None else min(size, m.size)
        fd = self._fd
        if fd is not None:
            data = os.pread(fd, n, m.data_offset)
            while 0 < len(data) < n:  # a short read is not the end of a regular file
                more = os.pread(fd, n - len(data), m.data_offset + len(data))
                if not more:
                    break
                data += more
        else:
            with self._lock:
                self._f.seek(m.data_offset)
                data = self._f.read(n)
        if len(data) != n:
            raise StreamError(f"{self.where}: member {m.name!r} is truncated")
        return data

    def _member(self, name: str) -> ZipMember:
        m = self._members.get(name)
        if m is None or name == MANIFEST:
            raise StreamError(f"{self.where}: archive member {name!r} is missing")
        return m

    def read_member(self, name: str) -> bytes:
        """A member's bytes (the whole file for a bare stream); its zip CRC is checked (with
        :attr:`crc32`). Thread-safe: decoding threads read (and CRC) their own members."""
        if self.kind == "stream":
            with self._lock:
                self._f.seek(0)
                return self._f.read()
        m = self._member(name)
        data = self._read(m)
        if (self.crc32 or zlib.crc32)(data) != m.crc:
            raise StreamError(f"{self.where}: member {name!r} is corrupted (zip CRC-32 mismatch)")
        return data

    def read_head(self, name: str) -> tuple[tuple[dict[str, Any], int], bytes]:
        """A member's stream header, parsed and checked (its own CRC32), read alone: the caller
        checks it against the manifest and picks the pipeline before the member's data is read.
        Returns ``(container.read_header's value, the header's bytes)``; the caller compares
        those bytes with the member it later reads whole (zip CRC checked), so what it decodes
        is what it checked. A header that does not parse is reported as the whole member's
        zip CRC mismatch when that fails too (the more telling error)."""
        if self.kind == "stream":
            blob = self.read_member(name)
            head = container.read_header(blob)
            return head, blob[: head[1]]
        m = self._member(name)
        prefix = self._read(m, 9)
        length = int.from_bytes(prefix[5:9], "little") if len(prefix) == 9 else 0
        blob = self._read(m, 9 + min(length, container.MAX_HEADER) + 4)
        try:
            head = container.read_header(blob)
        except StreamError:
            self.read_member(name)  # a damaged member: say so (zip CRC-32 mismatch)
            raise
        return head, blob[: head[1]]
