"""The file the CLI writes: an uncompressed zip of ordinary lmgc streams plus a manifest.

* ``<tensor>.lmgc`` (or ``<tensor>@<i>.lmgc`` when a large tensor is cut into chunks): one lmgc
  stream per chunk, each independently decodable with :func:`lmgc_core.decompress`;
* ``__lmgc__.json`` (deflated, written last): the source format, name, size and SHA-256, the
  tensors in the source's member order with their chunk members, and the segments — the
  source's literal bytes (headers, zip records) between the tensors' data — from which
  ``lmgc decompress`` writes the source back byte for byte.

:class:`ArchiveReader` also reads a bare stream (what ``Pipeline.compress`` returns) and zips
written before the manifest existed (members ``<name>.lmgc``, no source format).
See ``docs/format.md``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import IO, Any

from . import container
from .errors import StreamError
from .layout import FileLayout, Segment, Tensor, segments_from_json
from .npz_format import ZIP_ERRORS

ZIP_MAGIC = b"PK\x03\x04"
SUFFIX = ".lmgc"
MANIFEST = "__lmgc__.json"
ARCHIVE_VERSION = 1
MAX_MANIFEST = 256 << 20


@dataclass
class Entry:
    """One tensor of an archive and the members holding its chunks, in order."""

    name: str
    members: list[str]
    tensor: Tensor | None = None
    """None for a bare stream or a pre-manifest archive (known after decoding)."""


class ArchiveWriter:
    """Streams chunk members into a zip on ``f``, then the manifest."""

    def __init__(self, f: IO[bytes]) -> None:
        self._zip = zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._names: set[str] = {MANIFEST}

    def member_name(self, tensor_name: str, index: int, count: int) -> str:
        tensor_name = tensor_name or "array"  # a .npy or raw file's one nameless array
        base = tensor_name if count == 1 else f"{tensor_name}@{index}"
        name, k = base + SUFFIX, 1
        while name in self._names:  # tensor names may collide with chunk names
            name, k = f"{base}~{k}{SUFFIX}", k + 1
        self._names.add(name)
        return name

    def add(self, name: str, blob: bytes) -> None:
        self._zip.writestr(_info(name), blob)

    def close(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, separators=(",", ":")).encode()
        info = _info(MANIFEST)
        info.compress_type = zipfile.ZIP_DEFLATED
        self._zip.writestr(info, text)
        self._zip.close()


def _info(name: str) -> zipfile.ZipInfo:
    """A member entry with a fixed date, so the same input gives the same archive bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def manifest_for(
    layout: FileLayout, source: dict[str, Any], members: list[list[str]], chunk_bytes: int
) -> dict[str, Any]:
    return {
        "lmgc_archive": ARCHIVE_VERSION,
        "format": layout.format,
        "source": source,
        "identical": layout.identical,
        "notes": layout.notes,
        "chunk_bytes": chunk_bytes,
        "tensors": [
            {**t.to_json(), "members": m} for t, m in zip(layout.tensors, members, strict=True)
        ],
        "segments": layout.segments_json(),
        "metadata": layout.metadata,
    }


class ArchiveReader:
    """Read side of an lmgc file: an archive (with or without manifest) or a bare stream.
    ``f`` must be seekable and stay open while the reader is used."""

    def __init__(self, f: IO[bytes], where: str) -> None:
        self.where = where
        self.format: str | None = None
        self.source: dict[str, Any] = {}
        self.identical = False
        self.notes: list[str] = []
        self.metadata: dict[str, Any] | None = None
        self.segments: list[Segment] | None = None
        self._f = f
        self._zip: zipfile.ZipFile | None = None
        f.seek(0)
        head = f.read(4)
        if head == ZIP_MAGIC:
            self.kind = "archive"
            self._open_zip()
        elif head == container.MAGIC or not head:
            self.kind = "stream"
            self.entries = [Entry("", [""])]
        else:
            raise StreamError(f"{where}: not an lmgc stream or archive (bad magic)")

    def _open_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self._f)
            names = self._zip.namelist()
        except ZIP_ERRORS as exc:
            raise StreamError(f"{self.where}: corrupted lmgc archive ({exc})") from None
        if MANIFEST in names:
            self._read_manifest()
        else:  # written before the manifest existed: one stream per array, no source format
            self.entries = [Entry(n[: -len(SUFFIX)], [n]) for n in names if n.endswith(SUFFIX)]
            if not self.entries:
                raise StreamError(f"{self.where}: a zip without lmgc members")

    def _read_manifest(self) -> None:
        bad = f"{self.where}: corrupted lmgc archive"
        try:
            info = self._zip.getinfo(MANIFEST)  # type: ignore[union-attr]
            if info.file_size > MAX_MANIFEST:
                raise StreamError(f"{bad}: manifest of {info.file_size} bytes")
            manifest = json.loads(self.read_member(MANIFEST))
        except (ValueError, RecursionError) as exc:
            raise StreamError(f"{bad}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("lmgc_archive") != ARCHIVE_VERSION:
            raise StreamError(f"{bad}: unknown manifest version")
        try:
            self.format = manifest["format"]
            if self.format not in ("npy", "npz", "safetensors", "raw"):
                raise StreamError(f"{bad}: unknown source format {self.format!r}")
            self.source = dict(manifest["source"])
            self.identical = bool(manifest["identical"])
            self.notes = [str(n) for n in manifest.get("notes", [])]
            self.metadata = manifest.get("metadata")
            self.entries = []
            for item in manifest["tensors"]:
                tensor = Tensor.from_json(item)
                members = [str(m) for m in item["members"]]
                self.entries.append(Entry(tensor.name, members, tensor))
            self.segments = segments_from_json(manifest["segments"], len(self.entries))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StreamError(f"{bad}: bad manifest ({exc})") from None

    def read_member(self, name: str) -> bytes:
        """A member's bytes (the whole file for a bare stream); zip CRCs are checked."""
        if self._zip is None:
            self._f.seek(0)
            return self._f.read()
        try:
            return self._zip.read(name)
        except KeyError:
            raise StreamError(f"{self.where}: archive member {name!r} is missing") from None
        except ZIP_ERRORS as exc:
            raise StreamError(f"{self.where}: member {name!r} is corrupted ({exc})") from None

    def member_size(self, name: str) -> int:
        if self._zip is None:
            self._f.seek(0, 2)
            return self._f.tell()
        try:
            return self._zip.getinfo(name).file_size
        except KeyError:
            raise StreamError(f"{self.where}: archive member {name!r} is missing") from None
