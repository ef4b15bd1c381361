"""The compact form of a single-array file (archive format 3): one bare lmgc stream, no zip and
no manifest, whose header's ``file`` record says how to write the source back around the array.

A ``.npy`` of 2 KB coded in a zip costs ~600 bytes more than its stream (two local and central
zip records, the end record, a deflated manifest with the source's SHA-256 and the ``.npy``
header in base64); the record costs ~15. Nothing is lost in checking: every byte of the rebuilt
file is covered by the stream's own checks -- the ``.npy`` header by the header's CRC32 (and it
must declare exactly the array the stream holds), the data by the stream's SHA-256 or per-block
checksums -- and compression writes the record only after checking that header plus data are
the source, byte for byte (its SHA-256).

Records: ``{"format": "npy", "head": <the .npy header, bytes as ISO-8859-1 text>}`` and
``{"format": "raw"}`` (the file is the array's bytes). See ``docs/format.md``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from lmgc_core.files import npy
from lmgc_core.files.segments import Data, FileLayout, InputFileError, Literal, Segment, Tensor
from lmgc_core.util.errors import StreamError

FILE_KEY = "file"
"""The stream header key of the record."""


@dataclass
class CompactFile:
    """A parsed record: the source format, its segments, and (``.npy``) the array it declares."""

    format: str
    segments: list[Segment]
    tensor: Tensor | None
    """``.npy``: the array its header declares; raw: known from the stream header alone."""
    head: bytes = b""


def record_for(layout: FileLayout, chunk_bytes: int, lossless: bool) -> dict[str, Any] | None:
    """The ``file`` record that writes ``layout``'s source back, or None when the source needs
    a zip (several arrays, several chunks, other bytes, lossy stages, a file that cannot come
    back byte for byte)."""
    if not (lossless and layout.identical) or len(layout.tensors) != 1:
        return None
    tensor, segs = layout.tensors[0], layout.segments
    if tensor.bytes_only or tensor.nbytes > chunk_bytes:
        return None
    if layout.format == "raw" and len(segs) == 1 and isinstance(segs[0], Data):
        return {"format": "raw"} if layout.size == tensor.nbytes else None
    if (
        layout.format == "npy"
        and len(segs) == 2
        and isinstance(segs[0], Literal)
        and isinstance(segs[1], Data)
        and layout.size == len(segs[0].data) + tensor.nbytes
    ):
        return {"format": "npy", "head": segs[0].data.decode("latin-1")}
    return None


def head_of(record: dict[str, Any]) -> bytes:
    """The source's bytes before the array (the ``.npy`` header; nothing for raw)."""
    return str(record.get("head", "")).encode("latin-1")


def parse_record(record: Any, where: str) -> CompactFile:
    """Check a stream header's ``file`` record strictly (exact keys, a ``.npy`` header that parses
    to the last byte) and return what it says; anything else is a :class:`StreamError`."""
    bad = f"{where}: corrupted lmgc file record"
    if not isinstance(record, dict):
        raise StreamError(f"{bad} (not an object)")
    fmt = record.get("format")
    if fmt == "raw" and set(record) == {"format"}:
        return CompactFile("raw", [Data(0, 0)], None)
    if fmt != "npy" or set(record) != {"format", "head"} or not isinstance(record["head"], str):
        raise StreamError(f"{bad} ({sorted(record)!r}, format {fmt!r})")
    text = record["head"]
    if len(text) > npy.MAX_HEADER + 16 or any(ord(c) > 255 for c in text):
        raise StreamError(f"{bad} (the .npy header is not bytes)")
    head = text.encode("latin-1")
    try:
        raw, header = npy.read_header(io.BytesIO(head), where)
        tensor = npy.tensor_of(header, "", where)
    except InputFileError as exc:
        raise StreamError(f"{bad}: {str(exc).removeprefix(f'{where}: ')}") from None
    if raw != head:
        raise StreamError(f"{bad} (bytes after the .npy header)")
    return CompactFile("npy", [Literal(head), Data(0, len(head))], tensor, head)
