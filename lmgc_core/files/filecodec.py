"""Files in, files out: a source file compressed tensor by tensor, chunk by chunk, into an lmgc
archive (:mod:`lmgc_core.files.archive`), and an archive decoded back into the source file (byte for
byte, checked against the source's SHA-256) or converted to another format.

Memory is bounded by the chunk size (plus what the pipeline needs for a chunk), not by the size
of the file or of its largest tensor: one chunk at a time with ``jobs=1``; with ``jobs=N`` and a
thread-safe prior, N chunks being coded (or decoded) and at most two more done and waiting to
be written, so about N + 2 chunks' worth (see ``benchmarks/memory_safetensors.py``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import chain
from typing import IO, Any

import numpy as np

from lmgc_core.coding.recorded import header_errors, recorded_config
from lmgc_core.components import registry
from lmgc_core.files import archive, compact, writers
from lmgc_core.files.archive import ArchiveReader, ArchiveWriter, Entry, manifest_for
from lmgc_core.files.readers import chunk_readers, chunk_shapes, tensor_streams
from lmgc_core.files.segments import Deflated, FileLayout, InputFileError, Tensor
from lmgc_core.files.source_hash import FileHash, file_state
from lmgc_core.stream import container
from lmgc_core.stream.notes import VIEW_KEY, noted_parts, with_view
from lmgc_core.util import interrupts
from lmgc_core.util.dtypes import coding_view, decode_dtype, parse_dtype, restore_view, view_dtype
from lmgc_core.util.errors import (
    ChecksumError,
    ConfigError,
    LMGCError,
    MismatchError,
    PluginError,
    StreamError,
)
from lmgc_core.util.parallel import resolve_jobs, round_jobs, run_ahead
from lmgc_core.util.progress import Progress

DEFAULT_CHUNK_BYTES = 16 << 20
"""Tensors larger than this are coded in chunks of whole rows (or flat runs) of at most this
many bytes; it bounds the memory of a run (see ``benchmarks/memory_safetensors.py``)."""


@dataclass
class CompressResult:
    original: int
    """Bytes of tensor data."""
    source: int
    """Bytes of the source file."""
    n_tensors: int


class FileEncoder:
    """How the chunks of a file become streams: tensors through the user's pipeline, byte tensors
    (the file's other bytes: pickles, zip records, trailing bytes) through the ``float`` prior's
    fast level, which stores what does not compress and codes the rest at hundreds of MB/s,
    exactly, whatever the tensors' pipeline is (lossy stages, a language model). Where the fast
    level's compiled kernel is missing, byte tensors take the user's pipeline without its
    stages. Subclass it to watch or change the coding (tests do)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.lossless = all(getattr(stage, "lossless", False) for stage in pipeline.stages)
        self.concurrent = bool(pipeline.prior.thread_safe)
        """Chunks may be coded on several threads at once (a thread-safe prior)."""
        self._bytes_pipeline: Any = None
        self.base: dict[str, Any] | None = None
        """The reference file's manifest record (``--base``; see ``files/base_file.py``)."""
        self.coded_against: dict[int, str] = {}
        """Tensor index -> the base tensor it was coded against (the manifest says so)."""

    def n_symbols(self, nbytes: int) -> int:
        """Symbols the progress bar counts for a chunk of ``nbytes``."""
        return int(self.pipeline.serializer.n_symbols(nbytes))

    def tensor(self, array: np.ndarray, progress: Callable[[int], None], jobs: int) -> bytes:
        return self.pipeline.compress(array, progress=progress, jobs=jobs)

    def matches(self, tensors: list[Tensor]) -> bool:
        """Whether any of ``tensors`` may be coded against :attr:`base` (a subclass's)."""
        return False

    def check_unchanged(self) -> None:
        """Once every chunk is coded: refuse a run whose other inputs (a subclass's base file)
        changed meanwhile."""

    def coder_for(self, tensor: Tensor, index: int, i: int) -> Callable[..., bytes]:
        """What codes chunk ``i`` of tensor ``index``: :meth:`byte_run` for the file's other
        bytes, else :meth:`tensor` (a subclass may code some against a reference)."""
        return self.byte_run if tensor.bytes_only else self.tensor

    def byte_run(self, array: np.ndarray, progress: Callable[[int], None], jobs: int) -> bytes:
        return self.bytes_pipeline().compress(array, progress=progress, jobs=jobs)

    def bytes_pipeline(self) -> Any:
        if self._bytes_pipeline is None:
            from lmgc_core.coding.pipeline import Pipeline

            try:
                self._bytes_pipeline = Pipeline.from_config(BYTES_PIPELINE)
            except (ConfigError, PluginError):  # no compiled fast kernel here
                p = self.pipeline
                self._bytes_pipeline = type(p)(
                    p.serializer, p.prior, p.coder, (), p.window, p.batch
                )
        return self._bytes_pipeline


BYTES_PIPELINE: dict[str, Any] = {"prior": {"name": "float", "level": 1}}
"""What byte tensors are coded with (see :class:`FileEncoder`)."""


LOSSY_NOTE = "lossy stages: decompression gives their reconstruction"
"""The note of an archive made by lossy stages (each decode warns of it)."""
LOSSY_WARNING = "lossy stages: the arrays are their reconstruction"
"""What a decode of such an archive (a file's, or a folder's files) warns."""
MODEL_UNUSED = (
    "none of its streams needs a model (coded without an LM prior, or stored): --model is not used"
)
"""What a decode given ``--model`` warns when no stream took it (``StreamDecoder.model_used``)."""
FORCED = (
    "--force decoded it although the stream differs from this machine's pipeline ({}); the "
    "checksum verified the output"
)
"""What a decode warns for each mismatch ``--force`` went past (``StreamDecoder.forced``): the
flag also overwrites outputs, and a user who gave it for that was not told."""


def compress_file(
    src: IO[bytes],
    layout: FileLayout,
    source_name: str,
    out: IO[bytes],
    encoder: FileEncoder,
    progress: Progress,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    jobs: int = 1,
    source_hash: FileHash | None = None,
) -> CompressResult:
    """Code every tensor of ``layout`` (read from ``src``) into an archive written to ``out``.
    With lossy stages (``encoder.lossless`` false) decoding gives the stages' reconstruction of
    the arrays, so the manifest does not promise the source's bytes.

    With ``jobs > 1`` the file's SHA-256 runs on a thread of its own (``source_hash``: one the
    caller started earlier on ``src``), and when the pipeline may run on several threads at once
    (``encoder.concurrent``: a thread-safe prior) chunks are coded ahead of the writes
    (:func:`run_ahead`), ``jobs`` at a time: reading, hashing and writing overlap the coding. A
    chunk gets one thread (threads that keep their buffers, no more threads than cores), except
    in a short last round, whose chunks share the cores through their blocks
    (:func:`round_jobs`), so no core waits at the end. The bytes do not depend on ``jobs``."""
    lossless = encoder.lossless
    concurrent = encoder.concurrent
    jobs = resolve_jobs(jobs)
    layout.identical = layout.identical and lossless
    if not lossless:
        layout.notes.append(LOSSY_NOTE)
    file_hash = source_hash or FileHash(src, jobs)
    before = file_hash.state  # taken as the hash began (a caller's FileHash: before its imports)
    writer: ArchiveWriter | None = None
    matched = encoder.base is not None and encoder.matches(layout.tensors)
    if encoder.base is not None and not matched:  # said, not left to be guessed
        layout.notes.append(
            f"no tensor matches one of the base {encoder.base.get('name')!r} by name, dtype, "
            "shape and memory order (C or Fortran): every tensor is coded alone "
            "(decompressing needs no --base)"
        )
    # one array in one chunk, nothing else: one stream (compact.py); a base needs the manifest
    record = None if matched else compact.record_for(layout, chunk_bytes, lossless)
    try:
        writer = None if record is not None else ArchiveWriter(out)
        members: list[list[str]] = [[] for _ in layout.tensors]
        counts = [len(chunk_shapes(t, chunk_bytes)) for t in layout.tensors]
        if writer is not None:  # refused before coding, not after minutes of it
            writer.check_room(sum(counts), len(counts))

        def chunks() -> Iterator[tuple[int, int, int, Callable[[], np.ndarray], int]]:
            n, total = 0, sum(counts)
            for index, stream in tensor_streams(src, layout, source_name):
                tensor = layout.tensors[index]
                for i, read in enumerate(chunk_readers(stream, tensor, chunk_bytes, source_name)):
                    block_jobs = round_jobs(jobs, n, total) if concurrent else jobs
                    yield index, i, counts[index], read, block_jobs
                    n += 1

        def code(
            item: tuple[int, int, int, Callable[[], np.ndarray], int],
        ) -> tuple[int, int, int, bytes]:
            index, i, count, read, block_jobs = item
            chunk = read()  # on the coding thread where the file allows it
            view, note = coding_view(chunk)
            update = progress.chunk(chunk.nbytes, encoder.n_symbols(view.nbytes))
            code_with = encoder.coder_for(layout.tensors[index], index, i)
            try:
                blob = with_view(code_with(view, update, block_jobs), note)
            except LMGCError as exc:  # a stage refusing its input: say which tensor
                raise _in_tensor(exc, layout.tensors[index].name, len(layout.tensors)) from None
            update.finish()
            return index, i, count, blob

        if record is not None:  # one array in one chunk: the compact form (compact.py)
            try:
                _write_compact(record, chunks(), code, file_hash, out, source_name)
            finally:  # (a change shows first as a hash that does not match: say why)
                _check_unchanged(src, before, layout.size, source_name)
                encoder.check_unchanged()
            progress.finish_chunk()
            return CompressResult(layout.tensors[0].nbytes, layout.size, 1)
        # With a thread-safe prior, ``jobs`` chunks are coded at a time (see the docstring). A
        # prior that is not thread-safe (a language model) codes in the caller's thread: nothing
        # to overlap with its slow chunks, and Ctrl-C then stops it at once.
        ahead = jobs if concurrent else 1
        for index, i, count, blob in run_ahead(code, chunks(), ahead, workers=ahead):
            name = writer.member_name(layout.tensors[index].name, i, count)
            writer.add(name, blob)
            members[index].append(name)
            interrupts.check()  # a Ctrl-C that arrived inside a C callback
        progress.finish_chunk()
        digests = file_hash.digests()
        _check_unchanged(src, before, layout.size, source_name)
        encoder.check_unchanged()
        source = {"name": source_name, "size": layout.size, "sha256": digests["sha256"]}
        if layout.identical:  # what decompress checks the rebuilt file against
            source["xxh3_128"] = digests["xxh3_128"]
        # a base no tensor was coded against is not recorded: decoding needs no --base then
        base = encoder.base if encoder.coded_against else None
        if matched and base is None:
            layout.notes.append(
                f"every tensor that matches one of the base {encoder.base.get('name')!r} coded "
                "smaller alone (decompressing needs no --base)"
            )
        manifest = manifest_for(layout, source, members, chunk_bytes, base, encoder.coded_against)
        _check_manifest(manifest, writer.members, source_name)
        writer.close(manifest)
        writer = None
    finally:  # an error or Ctrl-C does not wait for the rest of the file to be hashed
        if writer is not None:  # nor leaves a zip that tries to finish itself later
            writer.abort()
        if source_hash is None:
            file_hash.cancel()
    total = sum(t.nbytes for t in layout.tensors)
    return CompressResult(total, layout.size, len(layout.tensors))


def _check_unchanged(f: IO[bytes], before: tuple[int, int] | None, size: int, where: str) -> None:
    """InputFileError when the source changed while it was coded: its chunks and its hash may
    then come from different bytes, and the archive would never decompress (an append made
    the hash cover bytes no chunk held)."""
    now = file_state(f)
    if before is not None and (now != before or now[0] != size):
        raise InputFileError(
            f"{where}: the file changed while it was being compressed (another program wrote "
            "to it); nothing was written: compress it again"
        )


def _write_compact(
    record: dict[str, Any],
    chunks: Iterator[tuple[int, int, int, Callable[[], np.ndarray], int]],
    code: Callable[[Any], tuple[int, int, int, bytes]],
    file_hash: FileHash,
    out: IO[bytes],
    where: str,
) -> None:
    """The one chunk's stream with the ``file`` record in its header, written only once the
    record's bytes and the chunk's are the source, byte for byte (its SHA-256)."""
    ((index, i, count, read, block_jobs),) = chunks
    kept: list[np.ndarray] = []

    def read_kept() -> np.ndarray:
        kept.append(read())
        return kept[-1]

    blob = code((index, i, count, read_kept, block_jobs))[3]
    digest = hashlib.sha256(compact.head_of(record))
    digest.update(np.ascontiguousarray(kept.pop()).reshape(-1).view(np.uint8))  # no copy
    if digest.hexdigest() != file_hash.result():
        raise InputFileError(f"{where}: its header and array are not the whole file")
    for piece in noted_parts(blob, {compact.FILE_KEY: record}):
        out.write(piece)


def _check_manifest(manifest: dict[str, Any], listed: list[Any], where: str) -> None:
    """Refuse to write an archive whose manifest the reader would refuse (over its size or
    value caps): whatever compress accepts, decompress restores. Literal runs over
    :data:`~lmgc_core.files.segments.LITERAL_MAX` are byte tensors, so only a file of very many
    members or tensors gets here."""
    text = json.dumps({**manifest, "members": listed}, separators=(",", ":")).encode()
    what = f"{where}: the archive's manifest"
    if len(text) > archive.MAX_MANIFEST:
        raise InputFileError(
            f"{what} would take {len(text)} bytes, over the {archive.MAX_MANIFEST} lmgc reads "
            "(too many tensors or zip members for one archive)"
        )
    try:
        container.check_json_text(
            text, what, archive.MAX_MANIFEST, archive.MAX_MANIFEST_VALUES,
            archive.MAX_MANIFEST_DEPTH,
        )  # fmt: skip
    except StreamError as exc:
        raise InputFileError(f"{exc} (too many tensors, or metadata nested too deep)") from None


# -- decoding --------------------------------------------------------------------------------------


class StreamDecoder:
    """Decodes member streams with the pipeline each records, built once per configuration
    (an LM prior loads its model once per run, not once per chunk)."""

    def __init__(self, force: bool = False, model: str | None = None, jobs: int = 1) -> None:
        self.force = force
        self.model = model
        self.model_used = False
        """Whether a stream's prior took ``model``: a ``--model`` none took is said, not
        silently dropped (the user meant it to be used)."""
        self.forced: list[str] = []
        """The mismatches ``force`` decoded past (one per configuration), to be said."""
        self.jobs = jobs
        self._pipelines: dict[str, Any] = {}
        self.bases: Callable[[dict[str, Any]], np.ndarray | None] | None = None
        """The base chunk a member's header names (``--base``), else ``None``."""

    def pipeline(self, header: dict[str, Any]) -> Any:
        """The recorded pipeline (``--model`` applied), or :data:`~lmgc_core.coding.pipeline.
        STORED` for a stream whose every part is stored: copied, never run, so its prior is not
        built (no model loaded, none needed) and ``--model`` / ``--force`` do not matter, as in
        :func:`lmgc_core.decompress`."""
        from lmgc_core.coding.pipeline import STORED, Pipeline, stored_only

        if stored_only(header):
            return STORED
        model = self.model if self.model and _takes_model(header) else None
        self.model_used |= model is not None
        config = recorded_config(header, {"model": model} if model else None)
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in self._pipelines:
            try:
                own = header_errors(header) if not self.model else nullcontext()
                with registry.recorded(), own:
                    self._pipelines[key] = Pipeline.from_config(config)
            except (ConfigError, PluginError) as exc:
                if not self.model:
                    raise
                # the user's model, not the stream, is the problem
                cls = ConfigError if isinstance(exc, ConfigError) else type(exc)
                raise cls(f"cannot decode with --model {self.model}: {exc}") from None
            if self.force:
                try:
                    self._pipelines[key].check_stream(header)
                except MismatchError as exc:  # decoded anyway: said afterwards (what differs)
                    self.forced.append(exc.what)
        return self._pipelines[key]

    def decode(
        self,
        blob: bytes,
        progress: Callable[[int], None] | None = None,
        jobs: int | None = None,
        max_nbytes: int | None = None,
        head: tuple[dict[str, Any], int] | None = None,
    ) -> np.ndarray:
        """The stored (C-order) array of a stream: a dtype view undone, a transposition kept.
        ``jobs`` threads for its blocks (default: the decoder's); a stream declaring more than
        ``max_nbytes`` is refused before anything is allocated. ``head``:
        ``container.read_header(blob)`` when the caller has it (each header is parsed once)."""
        head = container.read_header(blob) if head is None else head
        header = head[0]
        arr = self.pipeline(header).decompress(
            blob,
            force=self.force,
            progress=progress,
            jobs=self.jobs if jobs is None else jobs,
            max_nbytes=max_nbytes,
            head=head,
            base=None if self.bases is None or "base" not in header else self.bases(header),
        )
        note = header.get(VIEW_KEY)
        if isinstance(note, dict) and "dtype" in note:
            arr = restore_view(arr, {"dtype": note["dtype"]})
        return arr


def _takes_model(header: dict[str, Any]) -> bool:
    """Whether the prior a stream records has a ``model`` option: ``--model`` is for those (a
    mix stream that kept its float fallback, in an archive whose other members kept the LM,
    was refused: 'prior float has no option model'). A prior of ``experts`` (``mix``) takes it
    only through an expert that does: one of float and adaptive experts took none, and the
    ``--model is not used`` warning was not given."""
    from lmgc_core.coding.options import takes_option
    from lmgc_core.components.spec import ComponentSpec

    def takes(spec: Any, depth: int = 0) -> bool:
        spec = ComponentSpec.parse(spec)
        if not takes_option("prior", spec.name, "model"):
            return False
        experts = spec.options.get("experts")
        if not isinstance(experts, list) or depth > 4:  # a header's nesting is bounded
            return True
        return any(takes(e, depth + 1) for e in experts)

    pipeline = header.get("pipeline")
    try:
        return takes(pipeline.get("prior") if isinstance(pipeline, dict) else None)
    except LMGCError:  # a prior not installed or a bad spec: the build says so
        return True


def _symbol_count(header: dict[str, Any]) -> int:
    """Symbols the step engine will report for a stream (0 for whole-array parts, whose
    progress arrives when the part is done); a damaged header is a StreamError."""
    try:
        parts = header.get("parts", [])
        return sum(int(p.get("n_symbols", 0)) for p in parts)
    except (AttributeError, TypeError, ValueError) as exc:
        raise StreamError(f"bad part entry in header: {exc}") from None


def check_chunk_header(reader: ArchiveReader, index: int, i: int, header: dict[str, Any]) -> None:
    """Refuse member ``i`` of tensor ``index`` when its stream header declares an array other
    than the chunk the manifest says it holds (dtype and shape of
    :func:`~lmgc_core.files.readers.chunk_shapes`, as :func:`compress_file` cut it) -- before
    anything is
    decoded, so a small member declaring gigabytes costs nothing. Bare streams and pre-manifest
    archives have only the header to go by."""
    entry = reader.entries[index]
    tensor = entry.tensor
    if tensor is None or reader.chunk_bytes is None:
        return
    if entry.chunk_shapes is None:  # once per tensor: it has as many chunks as members
        entry.chunk_shapes = chunk_shapes(tensor, reader.chunk_bytes)
    want = entry.chunk_shapes[i]
    got = tensor_from_header(tensor.name, header)
    if got.dtype != tensor.dtype or got.shape != want or got.fortran:
        raise StreamError(
            f"{reader.where}: member {entry.members[i]!r} declares {got.dtype} {got.shape}, "
            f"the manifest says chunk {i} of tensor {tensor.name!r} is {tensor.dtype} {want}"
        )


def tensor_from_header(name: str, header: dict[str, Any]) -> Tensor:
    """What a stream holds, from its header alone (dtype, shape, memory order)."""
    try:
        dtype = parse_dtype(header["array"]["dtype"])
        shape = tuple(int(n) for n in header["array"]["shape"])
        if any(n < 0 for n in shape):  # ls printed it, decompress blamed an API argument
            raise ValueError(f"negative dimension in {list(shape)}")
        note = header.get(VIEW_KEY) or {}
        if not isinstance(note, dict):
            raise TypeError("bad view note")
        if "dtype" in note:
            dtype = decode_dtype(note["dtype"])
            if view_dtype(dtype)[1] != 1:
                shape = shape[:-1]
        fortran = note.get("order") == "F" and len(shape) > 1
        return Tensor(name, dtype, shape[::-1] if fortran else shape, fortran=fortran)
    except (KeyError, TypeError, ValueError) as exc:
        raise StreamError(f"stream header has a bad array entry ({exc})") from None


class ArchiveDecoder:
    """Decoded tensors of an archive, chunk by chunk, each checked against the manifest."""

    def __init__(
        self, reader: ArchiveReader, decoder: StreamDecoder, progress: Progress | None = None
    ) -> None:
        self.reader = reader
        self.decoder = decoder
        self.progress = progress or Progress(0, "decompress", quiet=True)
        self._heads: dict[str, tuple[dict[str, Any], int]] = dict(reader.heads)
        """Headers parsed already (bare streams, pre-manifest members), kept for their decode."""
        self._serial = threading.Lock()
        self._planned: deque[int] = deque()
        """Tensors still to be asked for in the order :meth:`plan` was given."""
        self._stream: Iterator[tuple[str, np.ndarray]] | None = None
        self.tensors: list[Tensor] = []
        for entry in reader.entries:
            if entry.tensor is None:  # bare stream / pre-manifest archive
                head = self._heads.get(entry.members[0]) or container.read_header(
                    reader.read_member(entry.members[0])
                )
                self._heads[entry.members[0]] = head
                entry.tensor = tensor_from_header(entry.name, head[0])
            self.tensors.append(entry.tensor)

    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def plan(self, order: list[int]) -> None:
        """Say in which order the tensors will be asked for (:meth:`chunks`, each once): their
        members are then decoded ahead in one run across tensor boundaries, so the writing of
        one tensor overlaps the decoding of the next (a checkpoint of many tensors of one or two
        chunks each would otherwise leave the cores idle while each tensor is written). A
        tensor asked for out of this order ends the plan and is decoded on its own."""
        self.close()
        self._planned = deque(order)
        self._stream = self._decoded(order)

    def close(self) -> None:
        """Stop decoding ahead (the threads finish their member and stop)."""
        stream, self._stream = self._stream, None
        self._planned = deque()
        if stream is not None:
            stream.close()

    def chunks(self, index: int) -> Iterator[np.ndarray]:
        """The tensor's decoded chunks, in order, each checked against the manifest's tensor
        (see :meth:`_decoded` for how members are decoded, :meth:`plan` for decoding ahead
        across tensors)."""
        entry: Entry = self.reader.entries[index]
        tensor = self.tensors[index]
        shared = bool(self._planned) and self._planned[0] == index and self._stream is not None
        if shared:
            self._planned.popleft()
            stream = self._stream
        else:
            self.close()
            stream = self._decoded([index])
        assert stream is not None
        done = count = 0
        try:
            for _ in entry.members:
                member, arr = next(stream)
                count += 1
                if arr.dtype != tensor.dtype or done + arr.nbytes > tensor.nbytes:
                    raise StreamError(
                        f"{self.reader.where}: member {member!r} holds {arr.dtype} data that "
                        f"does not fit tensor {tensor.name!r} ({tensor.dtype}, {tensor.nbytes} "
                        "bytes)"
                    )
                done += arr.nbytes
                yield arr
        finally:  # a tensor left unfinished leaves the shared run out of step: end it
            if not shared:
                stream.close()
            elif count < len(entry.members):
                self.close()
        self.progress.finish_chunk()
        if done != tensor.nbytes:
            raise StreamError(
                f"{self.reader.where}: tensor {tensor.name!r} decodes to {done} bytes, "
                f"the manifest says {tensor.nbytes}"
            )

    def _decoded(self, order: list[int]) -> Iterator[tuple[str, np.ndarray]]:
        """``(member, decoded array)`` of every member of the tensors in ``order``. With
        ``jobs > 1`` and a thread-safe pipeline, members are decoded ahead (:func:`run_ahead`,
        ``jobs`` at a time, their blocks on :func:`round_jobs` threads, as in
        :func:`compress_file`), so reading the archive and writing the output overlap the
        decoding. Pipelines are built here, on the caller's thread, from each member's stream
        header (read alone, parsed once, checked against the manifest); the member's data is
        read and its zip CRC checked on the decoding thread, so with ``jobs > 1`` that pass runs
        beside the writing too. A later member's pipeline that is not thread-safe decodes under
        a lock."""
        jobs = resolve_jobs(self.decoder.jobs)
        total = sum(len(self.reader.entries[index].members) for index in order)
        Item = tuple[str, bytes | None, Any, Any, int, int]

        def members() -> Iterator[Item]:
            n = 0
            for index in order:
                entry, nbytes = self.reader.entries[index], self.tensors[index].nbytes
                for i, member in enumerate(entry.members):
                    head, head_bytes = self._heads.pop(member, None), None
                    if head is None:
                        head, head_bytes = self.reader.read_head(member)
                    check_chunk_header(self.reader, index, i, head[0])  # before any allocation
                    pipeline = self.decoder.pipeline(head[0])
                    if self.reader.crc32 is None:  # the prior's faster CRC-32, zlib's values
                        self.reader.crc32 = getattr(pipeline.prior, "block_crc32", None)
                    yield member, head_bytes, head, pipeline, round_jobs(jobs, n, total), nbytes
                    n += 1

        def decode(item: Item) -> tuple[str, np.ndarray]:
            member, head_bytes, head, pipeline, block_jobs, nbytes = item
            blob = self.reader.read_member(member)  # zip CRC-32 checked
            if head_bytes is not None and blob[: len(head_bytes)] != head_bytes:
                raise StreamError(
                    f"{self.reader.where}: member {member!r} changed while it was read"
                )
            update = self.progress.chunk(_stream_bytes(head[0]), _symbol_count(head[0]))
            with nullcontext() if pipeline.prior.thread_safe else self._serial:
                arr = self.decoder.decode(blob, update, block_jobs if safe else jobs, nbytes, head)
            update.finish()
            return member, arr

        items = members()
        first = next(items, None)
        queue = iter(()) if first is None else chain([first], items)
        # Decode ahead only when the pipeline is thread-safe; a language model decodes in the
        # caller's thread as before (nothing to overlap, and Ctrl-C stops it at once).
        safe = first is not None and first[3].prior.thread_safe
        ahead = jobs if safe else 1
        yield from run_ahead(decode, queue, ahead, workers=ahead)


def _stream_bytes(header: dict[str, Any]) -> int:
    try:
        n = int(np.prod([int(d) for d in header["array"]["shape"]], dtype=object))
        return n * parse_dtype(header["array"]["dtype"]).itemsize
    except (KeyError, TypeError, ValueError, LMGCError):
        return 0


def decompress_archive(
    reader: ArchiveReader, dec: ArchiveDecoder, fmt: str, out: IO[bytes]
) -> bool:
    """Write the archive's tensors as ``fmt`` to ``out``. Returns True when the result was
    checked byte for byte against the source file's SHA-256 (a rebuild of the source)."""
    dec.plan(_order(reader, dec, fmt))
    try:
        return _write_archive(reader, dec, fmt, out)
    finally:
        dec.close()


def _order(reader: ArchiveReader, dec: ArchiveDecoder, fmt: str) -> list[int]:
    """The order in which :func:`_write_archive` asks for the tensors: the source's file order
    for a rebuild, the arrays' order for a conversion."""
    if fmt == reader.format and reader.segments is not None:
        return writers.data_order(reader.segments)
    return writers.chunk_order(writers.arrays(dec.tensors, fmt))


def _write_archive(reader: ArchiveReader, dec: ArchiveDecoder, fmt: str, out: IO[bytes]) -> bool:
    rebuild = fmt == reader.format and reader.segments is not None
    background = resolve_jobs(dec.decoder.jobs) > 1  # the hash beside the writes
    hashing = rebuild and reader.identical and not reader.compact
    algorithm = writers.checked_hash(reader.source)
    sink = writers.HashingWriter(out, hashing=hashing, background=background, algorithm=algorithm)
    try:
        return _write_into(reader, dec, fmt, sink, rebuild)
    finally:  # an error while writing: the background hash stops too
        sink.close()


def _in_tensor(exc: LMGCError, name: str, n_tensors: int) -> LMGCError:
    """``exc`` naming the tensor it is about, in a file of several (a stage speaks of its part
    ``'data'``)."""
    if n_tensors < 2 or not name:
        return exc
    try:
        return type(exc)(f"tensor {name!r}: {exc}")
    except TypeError:  # an error type of another signature: as it is
        return exc


def _other_zlib(reader: ArchiveReader) -> str:
    """Why a rebuilt file whose members are deflated again differs while its arrays passed
    their own checks: this machine's zlib deflates them to other bytes than the one that
    compressed it (zlib-ng, which Fedora ships as zlib, does; so may other builds). Empty for
    a file with no deflated member. (The archive does not record the zlib: a new key in the
    source record would change every such archive's bytes.)"""
    if not any(isinstance(seg, Deflated) for seg in reader.segments or []):
        return ""
    return (
        f": its deflated members are deflated again here, and this machine's zlib "
        f"({zlib.ZLIB_RUNTIME_VERSION}) may deflate them to other bytes than the zlib where it "
        "was compressed (zlib-ng does); the arrays passed their checks, so converting them "
        "(-o NAME.safetensors, or .npy for one array) works here, and the same file comes back "
        "where that zlib is"
    )


def _write_into(
    reader: ArchiveReader, dec: ArchiveDecoder, fmt: str, sink: writers.HashingWriter, rebuild: bool
) -> bool:
    if rebuild:
        writers.rebuild(reader.segments, dec.chunks, sink)
        if reader.compact:  # every byte came through the stream's own checks (compact.py)
            size = reader.source.get("size", sink.size)
            if sink.size != size:
                raise ChecksumError(f"{reader.where}: the rebuilt {fmt} file is not {size} bytes")
            return True
        if reader.identical:
            want = reader.source.get(sink.algorithm)
            got = sink.hexdigest()
            if sink.size != reader.source.get("size") or got != want:
                name = writers.HASH_NAMES[sink.algorithm]
                raise ChecksumError(
                    f"{reader.where}: the rebuilt {fmt} file does not match the source's {name}"
                    + _other_zlib(reader)
                )
            return True
        return False
    if fmt == "npy":
        writers.write_npy(dec.tensors, dec.chunks, sink)
    elif fmt == "npz":
        writers.write_npz(dec.tensors, dec.chunks, sink)
    elif fmt == "safetensors":
        writers.write_safetensors(dec.tensors, reader.metadata, dec.chunks, sink)
    elif fmt == "raw":
        writers.write_raw(dec.tensors, dec.chunks, sink)
    else:
        raise InputFileError(f"unknown output format {fmt!r}")
    return False
