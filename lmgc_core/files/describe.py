"""``lmgc info`` and ``lmgc ls``: one description of an archive or stream, every member checked.

:func:`describe` reads every member and verifies it as far as possible without decoding (zip
CRC, header CRC, block CRCs, lengths), so a damaged file raises :class:`StreamError` instead of
printing a ratio. The description is one JSON document (``info --json``); the text views are
derived from it, with anything unprintable in names and metadata (newlines, terminal escape
sequences) escaped as Python's ``repr`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from lmgc_core.files.archive import ArchiveReader
from lmgc_core.files.filecodec import check_chunk_header, tensor_from_header
from lmgc_core.files.safetensors_file import as_tagged
from lmgc_core.stream import container
from lmgc_core.util.dtypes import encode_dtype
from lmgc_core.util.text import safe


def _ratio(compressed: int, original: int) -> float:
    return round(100 * compressed / original, 4) if original else 0.0


def describe(src: IO[bytes], size: int, where: str) -> dict[str, Any]:
    reader = ArchiveReader(src, where)
    members = []
    for index, entry in enumerate(reader.entries):
        streams = []
        for i, member in enumerate(entry.members):
            blob = reader.read_member(member)
            box = container.unpack(blob)  # header CRC, lengths, block CRCs
            check_chunk_header(reader, index, i, box.header)
            streams.append({"member": member, "size": len(blob), "header": box.header})
            del blob, box
        tensor = entry.tensor or tensor_from_header(entry.name, streams[0]["header"])
        compressed = sum(s["size"] for s in streams)
        members.append(
            {
                "name": tensor.name,
                "dtype": _dtype_name(tensor),
                "shape": list(
                    tensor.shape if tensor.declared_shape is None else tensor.declared_shape
                ),
                "original_bytes": tensor.nbytes,
                "compressed_bytes": compressed,
                "ratio_percent": _ratio(compressed, tensor.nbytes),
                "bytes": tensor.bytes_only,  # not an array: a run of the source's other bytes
                "base": getattr(reader, "coded_against", {}).get(index),  # --base: OLD's tensor
                "streams": streams,
            }
        )
        if tensor.aliases:  # its other names (tied weights), which conversions write too
            members[-1]["aliases"] = list(tensor.aliases)
        if tensor.views:  # the named arrays that are parts of it (a torch storage's views)
            members[-1]["views"] = [v.name for v in tensor.views]
    original = sum(m["original_bytes"] for m in members)
    compressed = sum(m["compressed_bytes"] for m in members)
    doc: dict[str, Any] = {
        "file": where,
        "kind": reader.kind,
        "file_bytes": size,
        "format": reader.format,
        "source": reader.source or None,
        "identical": reader.identical if reader.format else None,
        "base": getattr(reader, "base", None),  # the file it was coded against (--base)
        "notes": reader.notes,
        "metadata": reader.metadata,
        "members": members,
        "totals": {
            "tensors": len(members),
            "streams": sum(len(m["streams"]) for m in members),
            "original_bytes": original,
            "compressed_bytes": compressed,
            "file_bytes": size,
            "ratio_percent": _ratio(size, original),
        },
    }
    return doc


def _dtype_name(tensor: Any) -> str:
    """The dtype a user knows the tensor by: bfloat16, not its big-endian ``>u2``; a packed
    safetensors dtype numpy has no type for (``F4``), not the ``uint8`` of its bytes."""
    if tensor.declared_shape is not None and tensor.tag:
        return str(tensor.tag)
    return encode_dtype(as_tagged(tensor).dtype)


def _shape(shape: list[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def ls_lines(doc: dict[str, Any]) -> list[str]:
    t = doc["totals"]
    total = ("total", f"{t['tensors']} tensors", "", t["original_bytes"], t["file_bytes"])
    return _table([*_member_rows(doc), total])


def folder_ls_lines(doc: dict[str, Any]) -> list[str]:
    """``ls`` of a folder (:func:`lmgc_core.files.folders.describe_folder`): every archive's
    tensors under ``FILE:TENSOR`` (a .npy's one tensor under its file's name), then the files
    copied as they were, then the folder's total."""
    rows = [r for rel, d in doc["coded"].items() for r in _member_rows(d, rel)]
    rows += [(rel, "copied", "", size, size) for rel, size in doc["copied"].items()]
    t = doc["totals"]
    files = f"{t['coded'] + t['copied']} files"
    return _table([*rows, ("total", files, "", t["original_bytes"], t["folder_bytes"])])


def _member_rows(doc: dict[str, Any], file: str | None = None) -> list[tuple[Any, ...]]:
    """A row per tensor of an archive: name (``file:name`` when ``file`` is given), dtype,
    shape, original and compressed bytes."""
    rows = []
    for m in doc["members"]:
        name = m["name"] or "-"
        if file is not None:
            name = f"{file}:{m['name']}" if m["name"] else file
        name = " = ".join([name, *m.get("aliases", [])])  # tied weights: one array
        if m.get("views"):  # a torch storage: the tensors that view it
            name += f" [{', '.join(m['views'])}]"
        dtype = "bytes" if m.get("bytes") else str(m["dtype"])
        shape = _shape(m["shape"])
        rows.append((name, dtype, shape, m["original_bytes"], m["compressed_bytes"]))
    return rows


def _table(rows: list[tuple[Any, ...]]) -> list[str]:
    """``ls``' columns: name, dtype, shape left-aligned, sizes and their ratio right-aligned."""
    head = ("name", "dtype", "shape", "original", "compressed", "ratio")
    cells = [head] + [(n, d, s, str(o), str(c), f"{_ratio(c, o):.2f}%") for n, d, s, o, c in rows]
    cells = [tuple(safe(cell) for cell in r) for r in cells]
    widths = [max(len(r[i]) for r in cells) for i in range(6)]
    return [
        "  ".join(
            r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i]) for i in range(6)
        ).rstrip()
        for r in cells
    ]


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` of a header's JSON where it is an object, else None: a damaged stream's
    header can hold anything its CRC was computed over."""
    return obj.get(key) if isinstance(obj, dict) else None


def _items(obj: Any) -> list[Any]:
    return obj if isinstance(obj, list) else []


def _part_line(part: Any) -> str:
    """A part's name, count, dtype and blocks; for a stored part what its prior's coding took
    (the bytes it would have written instead of the raw ones)."""
    text = (
        f"{_get(part, 'name')} {_get(part, 'count')} x {_get(part, 'dtype')} in "
        f"{len(_items(_get(part, 'blocks')))} blocks"
    )
    if _get(part, "coding") == "stored":
        took = _get(_get(part, "stored"), "steps")
        text += " stored raw" + (f" (the prior's coding: {took!r} bytes)" if took else "")
    return text


def _unbound(header: Any) -> bool:
    """Whether a stream header is one the pipeline decodes by copying (``stored_only``) and so
    records no prior fingerprint. (The pipeline module loads only here: ``lmgc ls`` / ``info``
    start without it.)"""
    from lmgc_core.coding.pipeline import stored_only

    return isinstance(header, Mapping) and stored_only(header) and "prior" not in header


def _series(header: Any) -> str | None:
    """What a time-axis series chunk holds (coding/time_axis.py), or None for another stream:
    its steps are streams of their own, which this header does not describe."""
    series = _get(header, "series")
    if series is None:
        return None
    return (
        f"a time-axis series of {_get(series, 'steps')} steps along axis "
        f"{_get(series, 'time_axis')}, each step its own stream coded against the step before "
        "it (decoded by the Zarr codec)"
    )


def _common(values: list[Any]) -> Any:
    return values[0] if values and all(v == values[0] for v in values) else None


def folder_info_lines(doc: dict[str, Any]) -> list[str]:
    """``info`` of a folder: what it holds, then each archive's :func:`info_lines`, then the
    files copied as they were and the empty folders."""
    t = doc["totals"]
    lines = [
        safe(f"{doc['folder']}: lmgc folder of {t['coded']} archives and {t['copied']} files "
             "copied as they were"),
        f"  size       {t['original_bytes']} -> {t['folder_bytes']} bytes "
        f"({t['ratio_percent']:.2f}%)",
    ]  # fmt: skip
    for d in doc["coded"].values():
        lines += info_lines(d)  # already safe
    lines += [safe(f"{rel}: copied as it was, {size} bytes") for rel, size in doc["copied"].items()]
    return lines + [safe(f"{rel}/: an empty folder") for rel in doc["empty_folders"]]


def info_lines(doc: dict[str, Any]) -> list[str]:
    lines = []
    t = doc["totals"]
    if doc["kind"] == "stream":
        lines.append(f"{doc['file']}: lmgc stream")
    elif doc["format"]:
        src = doc["source"] or {}
        again = "to it byte for byte" if doc["identical"] else "to its layout, not its bytes"
        lines.append(
            f"{doc['file']}: lmgc archive of {src.get('name')} ({doc['format']}, "
            f"{src.get('size')} bytes; decompresses {again})"
        )
    else:
        lines.append(f"{doc['file']}: lmgc archive (no manifest: an older lmgc wrote it)")
    source_size = (doc["source"] or {}).get("size")
    if type(source_size) is int and source_size > 0:  # the file it rebuilds, arrays or not
        lines.append(
            f"  size       {source_size} -> {t['file_bytes']} bytes "
            f"({_ratio(t['file_bytes'], source_size):.2f}%), {t['tensors']} tensors "
            f"({t['original_bytes']} bytes) in {t['streams']} streams"
        )
    else:
        lines.append(
            f"  size       {t['original_bytes']} -> {t['file_bytes']} bytes "
            f"({t['ratio_percent']:.2f}%), {t['tensors']} tensors in {t['streams']} streams"
        )
    if doc.get("base"):
        base, n = doc["base"], sum(m.get("base") is not None for m in doc["members"])
        lines.append(
            f"  base       {safe(base.get('name'))} ({base.get('size')} bytes, SHA-256 "
            f"{base.get('sha256')}): {n} tensors coded against it, the rest alone"
        )
    for note in doc.get("notes") or []:
        lines.append(f"  note       {note}")
    if doc.get("metadata"):
        lines.append(f"  metadata   {doc['metadata']}")
    headers = [s["header"] for m in doc["members"] for s in m["streams"]]
    pipeline = _common([_get(h, "pipeline") for h in headers])
    fingerprint = _common([_get(h, "prior") for h in headers])
    if pipeline:
        stages = [_get(s, "name") for s in _items(_get(pipeline, "stages"))]
        lines.append(f"  stages     {stages}")
        lines.append(f"  serializer {_get(pipeline, 'serializer')}")
        lines.append(f"  prior      {_get(pipeline, 'prior')}")
        lines.append(
            f"  coder      {_get(pipeline, 'coder')}  window {_get(pipeline, 'window')}  "
            f"batch {_get(pipeline, 'batch')}"
        )
    elif headers and all(_series(h) for h in headers):
        lines.append("  pipeline   in each step's own stream (a time-axis series chunk)")
    elif headers:
        lines.append("  pipeline   differs between streams (see --json)")
    if fingerprint:
        lines.append(f"  fingerprint {fingerprint}")
    elif headers and all(_unbound(h) for h in headers):
        lines.append("  fingerprint none: every part stored (decoded by copying, on any machine)")
    for m in doc["members"]:
        lines.append(
            f"  tensor {m['name'] or '-'}: {m['dtype']} {_shape(m['shape'])}, "
            f"{m['original_bytes']} -> {m['compressed_bytes']} bytes "
            f"({m['ratio_percent']:.2f}%), {len(m['streams'])} stream(s)"
        )
        for s in m["streams"]:
            h = s["header"]
            if series := _series(h):
                lines.append(f"    {s['member'] or '(stream)'}: {s['size']} bytes; {series}")
                continue
            parts = ", ".join(_part_line(p) for p in _items(_get(h, "parts")))
            lines.append(f"    {s['member'] or '(stream)'}: {s['size']} bytes; {parts}")
            if _get(h, "checksum") is not None:  # the fast level: a checksum in every block
                lines.append(f"      checksum {_get(h, 'checksum')}")
            else:
                lines.append(f"      sha256 {_get(h, 'sha256')}")
    return [safe(line) for line in lines]
