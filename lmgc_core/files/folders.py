"""Model folders (config, tokenizer, sharded weights) compressed file by file, and back.

``compress_folder`` codes every file lmgc can read as tensors (safetensors shards, torch
files, ``.npy``/``.npz``) into ``<name>.lmgc`` next to copies of the other files, and writes
``lmgc_folder.json``: which files were coded, which copied, and which it tried and could not code
(copied too, with the reason). ``decompress_folder`` gives the folder back byte for byte. The
per-file functions (:func:`compress_path`, :func:`decompress_path`) are what the
``lmgc.safetensors`` API writes and reads with too.

Names stay as transformers expects them in the index JSON: ``model-00001-of-00002.safetensors``
becomes ``model-00001-of-00002.safetensors.lmgc``, the index is copied as it is (see
:mod:`lmgc_core.integrations.hf`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmgc_core.files.archive import SUFFIX
from lmgc_core.files.outputs import (
    PART,
    STALE_PART,
    check_free_space,
    entry_key,
    renamed_into_place,
    temp_beside,
)
from lmgc_core.files.readers import sniff
from lmgc_core.files.segments import InputFileError
from lmgc_core.stream import container
from lmgc_core.util.errors import ConfigError, LMGCError, MismatchError, StreamError
from lmgc_core.util.progress import Progress

FOLDER_MANIFEST = "lmgc_folder.json"
MAX_MANIFEST_BYTES = 256 << 20
MAX_MANIFEST_VALUES = 1 << 23
MAX_MANIFEST_DEPTH = 8
MAX_PATH_PARTS = 256
"""Caps on what a folder manifest may hold (2.7 million files: three values each; compress
refuses a folder of more, rather than write a manifest no decompress reads): a 15 KB manifest
of paths 1,500 folders deep took 25 s, then Python's recursion limit; 2^24 values (142 MB of
JSON) took 1.5 GB to read, 2^23 take about half."""
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
TENSOR_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth")
SNIFFED_SUFFIXES = (".bin", ".ckpt", ".tar")
_COPY_BLOCK = 1 << 20


class FolderError(LMGCError):
    """A model folder lmgc cannot compress or restore (a shard index naming missing files, a
    damaged folder manifest)."""


# -- one file ------------------------------------------------------------------------------------


def default_pipeline() -> Any:
    from lmgc_core.coding.pipeline import Pipeline

    return Pipeline.from_config({})


def compress_stream(
    src: IO[bytes],
    size: int,
    name: str,
    out: IO[bytes],
    pipeline: Any = None,
    progress: Progress | None = None,
    jobs: int = 1,
    base: str | os.PathLike | None = None,
    chunk: int | None = None,
) -> list[str]:
    """Code the tensor file open as ``src`` (named ``name``: its format comes from the name, else
    its magic bytes) into an lmgc archive on ``out`` -- the same archive ``lmgc compress``
    writes (against the file ``base`` when given: ``lmgc compress --base``; in streams of
    ``chunk`` bytes, ``--chunk-size``). Returns what the scan and coding noted (what the
    command warns of)."""
    from lmgc_core.files.base_file import encoder_for
    from lmgc_core.files.filecodec import DEFAULT_CHUNK_BYTES, compress_file
    from lmgc_core.files.readers import scan

    if isinstance(pipeline, Mapping):  # a config, as everywhere else (an AttributeError)
        from lmgc_core.coding.pipeline import Pipeline

        pipeline = Pipeline.from_config(pipeline)
    pipeline = pipeline or default_pipeline()
    layout = scan(src, size, name, None, None)  # before the base: a file that is no tensor file
    with ExitStack() as stack:  # is copied, whatever its base
        chunk = chunk or DEFAULT_CHUNK_BYTES
        encoder = encoder_for(pipeline, None if base is None else str(base), stack, chunk)
        compress_file(
            src, layout, name, out, encoder,
            progress or Progress(0, "compress", quiet=True), chunk, jobs,
        )  # fmt: skip
    return layout.notes


def compress_path(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    pipeline: Any = None,
    progress: Progress | None = None,
    jobs: int = 1,
    base: str | os.PathLike | None = None,
    chunk: int | None = None,
) -> list[str]:
    """``lmgc compress SRC -o DST [--base BASE] [--chunk-size N]`` as a function (``DST``
    replaced only when all went well); returns :func:`compress_stream`'s notes."""
    from lmgc_core.files.outputs import atomic_output

    with open(src, "rb") as f, atomic_output(str(dst), True, str(src)) as out:
        return compress_stream(f, os.fstat(f.fileno()).st_size, Path(src).name, out, pipeline,
                               progress, jobs, base, chunk)  # fmt: skip


def decompress_path(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    progress: Progress | None = None,
    jobs: int = 1,
    base: str | os.PathLike | None = None,
    model: str | None = None,
    force: bool = False,
) -> bool:
    """``lmgc decompress SRC -o DST [--base BASE] [--model M] [-f]``: the source file back,
    checked against its SHA-256 (True; False when lossy stages made the archive, whose arrays
    are then their reconstruction). ``base``: the file an archive coded against one needs
    (ignored else); ``model``, ``force``: an LM prior's model moved, or another one tried."""
    from lmgc_core.files.filecodec import StreamDecoder

    decoder = StreamDecoder(force, model, jobs)
    return _decode_path(src, _replacing(dst, src), progress, decoder, base)


def _replacing(dst: str | os.PathLike, src: str | os.PathLike) -> Callable[[], Any]:
    """What opens ``dst`` for :func:`_decode_path`: replaced once the decode ends well."""
    from lmgc_core.files.outputs import atomic_output

    return lambda: atomic_output(str(dst), True, str(src))


def _decode_path(
    src: str | os.PathLike,
    output: Callable[[], AbstractContextManager[Any]],
    progress: Progress | None,
    decoder: Any,
    base: str | os.PathLike | None,
) -> bool:
    """:func:`decompress_path` into what ``output()`` opens (a file, or nothing for a test),
    with ``decoder`` (a ``StreamDecoder``: the caller asks it afterwards whether ``--model``
    was used)."""
    from lmgc_core.files.archive import ArchiveReader
    from lmgc_core.files.base_file import attach
    from lmgc_core.files.filecodec import ArchiveDecoder, decompress_archive

    try:
        with open(src, "rb") as f, ExitStack() as stack:
            reader = ArchiveReader(f, str(src))
            if reader.format is None or reader.segments is None:
                raise FolderError(f"{src}: not an lmgc archive of a file (no source to rebuild)")
            attach(reader, decoder, None if base is None else str(base), str(src), stack)
            dec = ArchiveDecoder(reader, decoder, progress)
            with output() as out:
                return decompress_archive(reader, dec, reader.format, out)
    except (StreamError, MismatchError) as exc:  # a damaged member: say which file holds it
        if str(src) in str(exc):
            raise
        raise type(exc)(f"{src}: {exc}") from None


# -- folders -------------------------------------------------------------------------------------


@dataclass
class FolderResult:
    coded: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    uncoded: list[tuple[str, str]] = field(default_factory=list)
    """Files that looked like tensors but could not be coded: ``(path, reason)``; copied."""
    source_bytes: int = 0
    written_bytes: int = 0
    lossy: list[str] = field(default_factory=list)
    """Decompressed files that are a lossy pipeline's reconstruction, not the source."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Entries that are no regular file (a link leading nowhere, a FIFO): ``(path, why)``."""
    copied_sha256: dict[str, str] = field(default_factory=dict)
    """The SHA-256 of each copied file, which the manifest records and decompression checks."""
    coded_xxh3_128: dict[str, str] = field(default_factory=dict)
    """The XXH3-128 of each archive written (``NAME.lmgc``), which the manifest records and
    decompression checks: another archive of the same name (a run writing the same folder at
    the same time, a shard copied from another model's folder) is refused, not decoded."""
    leftovers: list[str] = field(default_factory=list)
    """Hidden files a killed run left in the output folder (see :class:`_Kept`)."""
    model_used: bool = False
    """Whether a decoded file's prior took ``--model`` (one none took is said)."""
    forced: list[tuple[str, str]] = field(default_factory=list)
    """``(path, mismatch)`` of each mismatch ``--force`` decoded past (each is said)."""
    unchecked: list[str] = field(default_factory=list)
    """Copied files read but not checked: the manifest (older, or none) has no SHA-256."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """What coding a file noted, ``(path, note)``: a pickle's unsafe global, lossy stages, a
    member kept as bytes (``lmgc compress FILE`` warns of them; a folder dropped them)."""


def _files(
    root: Path, empty: list[str] | None = None, skipped: list[tuple[str, str]] | None = None
) -> Iterator[str]:
    """Every regular file under ``root`` (relative POSIX paths, sorted, symlinks followed).
    A link to a folder that contains it (``self -> .``) is a :class:`FolderError`: followed, it
    gave every file again at each depth, and two such links an endless walk; so is a folder
    that cannot be listed (it was left out, with exit 0). ``empty`` gets the folders with
    nothing in them, which the manifest lists so that decompression makes them again (an
    empty ``logs/`` a training script expects; folders holding only other folders come back as
    their parents); ``skipped`` the entries that are no file to copy (a link that leads
    nowhere, a FIFO, a socket, a device), with why: they were dropped without a word."""

    def unlisted(exc: OSError) -> None:
        raise FolderError(f"{exc.filename}: cannot list this folder ({exc.strerror})")

    inodes: dict[Path, tuple[int, int]] = {}
    for folder, dirs, names in os.walk(root, onerror=unlisted, followlinks=True):
        here = Path(folder)
        st = os.stat(here)
        inodes[here] = (st.st_dev, st.st_ino)
        if any(inodes.get(up) == inodes[here] for up in here.parents):
            raise FolderError(
                f"{here}: a symbolic link leads back to a folder that contains it (a loop)"
            )
        dirs.sort()
        if empty is not None and not dirs and not names and here != root:
            empty.append(here.relative_to(root).as_posix())
        for name in sorted(names):
            path = Path(folder, name)
            if path.is_file():
                yield path.relative_to(root).as_posix()
            elif skipped is not None:
                skipped.append((path.relative_to(root).as_posix(), _not_a_file(path)))


def _not_a_file(path: Path) -> str:
    """Why a folder's entry that is not a regular file is left out."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"a symbolic link that cannot be followed ({exc.strerror})"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "a device or other special file, not a regular file"


def is_tensor_file(path: Path) -> bool:
    """Worth trying to code: a tensor suffix, or a name checkpoints also take (``.bin``,
    ``.ckpt``, ``.pth.tar``) on a torch.save file (a legacy one too: it is then listed as
    copied uncoded, with the reason)."""
    name = path.name.lower()
    if name.endswith(TENSOR_SUFFIXES):
        return True
    if name.endswith(SNIFFED_SUFFIXES):
        with open(path, "rb") as f:
            return sniff(f, path.stat().st_size) == "torch"
    return False


def check_indexes(root: Path, files: list[str]) -> None:
    """Every shard index (``*.safetensors.index.json``) must name files that are there."""
    present = set(files)
    for rel in files:
        if not rel.endswith(INDEX_SUFFIXES):
            continue
        try:
            index = json.loads((root / rel).read_text("utf-8"))
            shards = set(index["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise FolderError(f"{root / rel}: not a readable shard index ({exc})") from None
        base = Path(rel).parent
        missing = sorted(s for s in shards if (base / str(s)).as_posix() not in present)
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise FolderError(
                f"{root / rel} names {len(missing)} file(s) missing from the folder: {shown}"
            )


def _prepare_output(out_dir: Path, force: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a folder")
        if _unfinished_marks(out_dir) and not force:
            raise ConfigError(f"{out_dir}: {UNFINISHED_DECOMPRESS}")
        if any(out_dir.iterdir()) and not force:
            raise ConfigError(f"{out_dir} is not empty; use --force to write into it")
    out_dir.mkdir(parents=True, exist_ok=True)


UNFINISHED_MARK = "lmgc-decompress-unfinished"
"""The name of the file (hidden: ``.NAME.XXXXXXXX.part``) a folder decompress writes into its
output first and removes last: a run killed part way (SIGKILL, a power cut: nothing can undo
what it wrote) leaves it, so a folder with files missing does not pass for a whole one."""
UNFINISHED_DECOMPRESS = (
    "an `lmgc decompress` into this folder did not finish (it was killed, or is still running): "
    "files may be missing; decompress it again with --force"
)
STALE_MARK = (
    "the mark of an `lmgc decompress` into this folder that did not finish (killed), or of one "
    "still writing it: remove it once no lmgc run writes here"
)


def _mark_unfinished(out: Path, new: list[str]) -> Path:
    """The mark (:data:`UNFINISHED_MARK`) written into ``out`` and listed in ``new``, which a
    failed run removes (:func:`_undo`) and a finished one removes once every file is checked."""
    fd, mark = temp_beside(out / UNFINISHED_MARK, PART)
    new.append(Path(mark).name)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(UNFINISHED_DECOMPRESS + "\n")
    return Path(mark)


def _unfinished_marks(folder: Path) -> list[Path]:
    """The marks unfinished decompresses left in ``folder`` (or one running now writes)."""
    return sorted(folder.glob(f".{UNFINISHED_MARK}.*{PART}"))


def _copy(src: Path, dst: Path, progress: Progress, sha256: str | None = None) -> str:
    """``src`` to ``dst`` through a temporary file of a name no other file has (a fixed
    ``.NAME.part`` was the name of a file of the folder too, which it replaced); returns the
    SHA-256 of the bytes, and refuses (writing nothing) bytes that are not ``sha256``'s."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with renamed_into_place(dst, like=str(src)) as out:
        return _copy_into(src, out, progress, sha256)


def _copy_into(src: Path, out: Any, progress: Progress, sha256: str | None = None) -> str:
    """:func:`_copy`'s bytes into ``out`` (a file, or nothing for a test), hashed."""
    digest = hashlib.sha256()
    with open(src, "rb") as f:
        while block := f.read(_COPY_BLOCK):
            out.write(block)
            digest.update(block)
            progress.chunk(len(block), 0).finish()
    if sha256 is not None and digest.hexdigest() != sha256:
        raise FolderError(
            f"{src}: not the file compress copied (its SHA-256 differs from the manifest's)"
        )
    return digest.hexdigest()


def compress_folder(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    pipeline: Any = None,
    jobs: int = 1,
    quiet: bool = True,
    force: bool = False,
    base_dir: str | os.PathLike | None = None,
    chunk: int | None = None,
) -> FolderResult:
    """Code every tensor file of ``src_dir`` into ``out_dir/<name>.lmgc``, copy the rest, write
    ``lmgc_folder.json``. The progress bar counts the source bytes. ``base_dir``: a folder whose
    file of the same relative path each tensor file is coded against (``--base``), when it has
    one; ``chunk``: the bytes per stream (``--chunk-size``; it was ignored for folders)."""
    root, out = Path(src_dir), Path(out_dir)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise ConfigError(f"{out}: the output folder must not be inside {root}")
    empty: list[str] = []
    skipped: list[tuple[str, str]] = []
    files = list(_files(root, empty, skipped))  # one walk for all three
    if FOLDER_MANIFEST in files:
        raise FolderError(f"{root} holds {FOLDER_MANIFEST}: it is already an lmgc folder")
    if marks := _unfinished_marks(root):  # its archive would pass for the whole folder's
        raise FolderError(f"{marks[0]}: {UNFINISHED_DECOMPRESS}")
    check_indexes(root, files)
    names = [rel + SUFFIX for rel in files] + files + [FOLDER_MANIFEST]
    _check_apart(root, files, out, names)
    made = [out] if not out.exists() else []  # what a failure removes again (_undo)
    _prepare_output(out, force)
    pipeline = pipeline or default_pipeline()
    new = [name for name in names if not os.path.lexists(out / name)]
    made += _new_folders(out, [str(Path(rel).parent) for rel in files] + empty)
    with _Kept() as kept:
        try:
            # until the run ends, the folder says it is unfinished (were a put-back interrupted,
            # an older manifest must not make a mix of old and new files pass for a whole one)
            kept.keep(out / FOLDER_MANIFEST)
            unfinished = json.dumps({"lmgc_folder": 1, "incomplete": UNFINISHED})
            _write_manifest(out / FOLDER_MANIFEST, unfinished)
            result = _code_folder(root, out, files, empty, pipeline, jobs, quiet, base_dir,
                                  kept, skipped, chunk)  # fmt: skip
        except BaseException:  # a bad base, a full disk, Ctrl-C: no half-written folder is
            # left, which would decode as a whole one with files missing (or old ones)
            _undo(out, new, made)
            kept.put_back()
            raise
    _mirror_modes(root, out, made)
    result.leftovers = _leftovers(out)  # once this run's own links are gone
    return result


UNFINISHED = "`lmgc compress` did not finish writing this folder: compress it again"
UNCHECKED = "no SHA-256 of it is recorded (a manifest from before 2026-12-06, or none)"
"""Why a copied file is not checked."""
"""The ``incomplete`` entry of the manifest a folder holds while it is written."""


def _code_folder(
    root: Path,
    out: Path,
    files: list[str],
    empty: list[str],
    pipeline: Any,
    jobs: int,
    quiet: bool,
    base_dir: str | os.PathLike | None,
    kept: _Kept,
    skipped: list[tuple[str, str]],
    chunk: int | None = None,
) -> FolderResult:
    """:func:`compress_folder`'s work once its output folder is ready."""
    result = FolderResult(skipped=skipped)
    total = sum((root / rel).stat().st_size for rel in files)
    taken = set(files)
    with Progress(total, "compress", quiet) as bar:
        for rel in files:
            path = root / rel
            size = path.stat().st_size
            result.source_bytes += size
            if rel + SUFFIX in taken:  # its archive's name is another file's: copied as it is
                result.uncoded.append((rel, f"the folder holds a file named {rel + SUFFIX} too"))
            elif len(os.fsencode(path.name + SUFFIX)) > 255:
                result.uncoded.append((rel, "its archive's name would be over 255 bytes"))
            elif is_tensor_file(path):
                done = bar.done
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                kept.keep(out / (rel + SUFFIX))
                try:
                    base = _base_of(base_dir, rel)
                    notes = compress_path(path, out / (rel + SUFFIX), pipeline, bar, jobs, base,
                                          chunk)  # fmt: skip
                except InputFileError as exc:  # not the file its name says: kept as it is
                    reason = str(exc).removeprefix(f"{path.name}: ")
                    result.uncoded.append((rel, reason))  # its bytes count as copied
                else:
                    bar.chunk(max(0, size - (bar.done - done)), 0).finish()  # headers, zip
                    result.coded.append(rel)
                    result.notes += [(rel, note) for note in notes]
                    result.written_bytes += (out / (rel + SUFFIX)).stat().st_size
                    result.coded_xxh3_128[rel] = _archive_digest(out / (rel + SUFFIX))
                    continue
            kept.keep(out / rel)
            result.copied_sha256[rel] = _copy(path, out / rel, bar)
            result.copied.append(rel)
            result.written_bytes += size
    manifest: dict[str, Any] = {
        "lmgc_folder": 1,
        "coded": result.coded,
        "copied": result.copied,
        "uncoded": [{"path": p, "reason": r} for p, r in result.uncoded],
        "copied_sha256": result.copied_sha256,  # absent before 2026-12-06: copies unchecked
        "coded_xxh3_128": result.coded_xxh3_128,  # absent before 2026-12-07: archives unchecked
    }
    for rel in empty:
        (out / rel).mkdir(parents=True, exist_ok=True)
    if empty:  # absent otherwise: such manifests stay as they were
        manifest["empty_folders"] = empty
    if skipped:  # absent otherwise, as above; readers only show it
        manifest["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
    text = json.dumps(manifest, indent=1) + "\n"
    try:  # what decompress will accept: else a folder no command could read back
        container.check_json_text(text.encode(), FOLDER_MANIFEST, MAX_MANIFEST_BYTES,
                                  MAX_MANIFEST_VALUES, MAX_MANIFEST_DEPTH)  # fmt: skip
    except StreamError as exc:
        raise FolderError(f"{root}: too many files for one folder archive ({exc})") from None
    _write_manifest(out / FOLDER_MANIFEST, text)
    return result


def _check_apart(in_root: Path, inputs: list[str], out: Path, outputs: list[str]) -> None:
    """No file a run writes is another one it reads: ``compress O/P -o O`` wrote P's files
    over the ones it was reading. A name is compared by its folder's real path and its own
    name (a link in the output is replaced, not what it leads to); a copy onto itself (a
    folder decompressed in place) is no clash."""

    read = {entry_key(in_root / rel): rel for rel in inputs}
    for rel in outputs:
        source = read.get(entry_key(out / rel))
        if source is not None and source != rel:
            raise ConfigError(
                f"{out}: writing {rel} there would replace {source}, which it reads from "
                f"{in_root}: choose an output folder apart from the input"
            )


def _read_folder_manifest(
    root: Path,
) -> tuple[list[str], list[str], list[str], dict[str, str], dict[str, str]]:
    """``(coded, copied, empty folders, the copied files' SHA-256s, the archives' XXH3-128s)``
    from ``lmgc_folder.json``; without one, every ``*.lmgc`` is coded and nothing is checked
    against a manifest."""
    path = root / FOLDER_MANIFEST
    if not path.exists():
        files = list(_files(root))
        if not any(f.endswith(SUFFIX) for f in files):
            raise FolderError(
                f"{root}: not a folder written by `lmgc compress` (no {FOLDER_MANIFEST}, "
                "no .lmgc files)"
            )
        coded = [f[: -len(SUFFIX)] for f in files if f.endswith(SUFFIX)]
        copied = [f for f in files if not f.endswith(SUFFIX)]
        _check_distinct(root, coded, copied)
        return coded, copied, [], {}, {}
    if not path.is_file():  # a FIFO hung the run, a link to /dev/zero read till out of memory
        raise FolderError(f"{path}: the folder manifest is not a regular file")
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)  # the cap is checked before anything is read
        container.check_json_text(text, FOLDER_MANIFEST, MAX_MANIFEST_BYTES, MAX_MANIFEST_VALUES,
                                  MAX_MANIFEST_DEPTH)  # fmt: skip
        doc = json.loads(text.decode("utf-8"))
        unfinished = doc.get("incomplete") if isinstance(doc, dict) else None
        coded, copied, empty, hashes, archives = [], [], [], {}, {}
        if unfinished is None:
            coded, copied = list(doc["coded"]), list(doc["copied"])
            empty = list(doc.get("empty_folders", []))  # absent before 2026-12-06: none
            hashes = dict(doc.get("copied_sha256", {}))  # the same
            archives = dict(doc.get("coded_xxh3_128", {}))  # absent before 2026-12-07
        named = [*coded, *copied, *empty, *hashes, *hashes.values(), *archives]
        if doc.get("lmgc_folder") != 1 or not all(
            isinstance(p, str) for p in [*named, *archives.values()]
        ):
            raise ValueError("unknown version or bad entries")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise FolderError(f"{path}: damaged folder manifest ({exc})") from None
    if unfinished is not None:
        raise FolderError(f"{root}: {unfinished}")
    for rel in coded + copied + empty:  # the manifest must not send writes outside the folder
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise FolderError(f"{path}: names a path outside the folder: {rel!r}")
        if Path(rel).as_posix() != rel or rel in ("", "."):  # './a.npy', 'a.npy/', 'sub//a'
            raise FolderError(f"{path}: names a path not in its plain form: {rel!r}")
        if len(Path(rel).parts) > MAX_PATH_PARTS:
            raise FolderError(f"{path}: names a path over {MAX_PATH_PARTS} folders deep")
        if not _nameable(rel):
            raise FolderError(f"{path}: names a path no file can have: {rel!r}")
    if clash := sorted(set(empty) & set(coded + copied)):
        raise FolderError(f"{path}: lists {clash[0]!r} as a file and as an empty folder")
    if "copied_sha256" in doc and (unchecked := sorted(set(copied) - set(hashes))):
        raise FolderError(f"{path}: lists copied files without their SHA-256: {unchecked[0]!r}")
    if "coded_xxh3_128" in doc and (unchecked := sorted(set(coded) - set(archives))):
        raise FolderError(f"{path}: lists archives without their XXH3-128: {unchecked[0]!r}")
    _check_distinct(root, coded, copied, empty)
    return coded, copied, empty, hashes, archives


def _nameable(rel: str) -> bool:
    """Whether the filesystem can hold the name: no NUL, no lone surrogate (a -f run failed on
    one half-way and left the folder changed)."""
    try:
        return b"\0" not in os.fsencode(rel)
    except UnicodeEncodeError:
        return False


def _check_distinct(
    root: Path, coded: list[str], copied: list[str], empty: Sequence[str] = ()
) -> None:
    """No output file written twice, nor a file where another entry needs a folder: a decoded
    ``a.npy`` (from ``a.npy.lmgc``) and a copied ``a.npy`` would leave whichever came last,
    with exit 0; a file ``a.npy`` and a file or empty folder ``a.npy/x`` cannot both be made
    (``--test`` said OK, decompress failed half-way)."""
    seen: set[str] = set()
    for rel in coded + copied:
        if rel in seen:
            raise FolderError(
                f"{root}: {rel} would be written twice (decoded from {rel + SUFFIX} and copied, "
                "or listed twice): decompress the files one by one"
            )
        seen.add(rel)
    for rel in [*coded, *copied, *empty]:
        for up in Path(rel).parents:
            if up.as_posix() in seen:
                raise FolderError(
                    f"{root}: lists {up.as_posix()} as a file and {rel} under it, as if it "
                    "were a folder"
                )


def decompress_folder(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    jobs: int = 1,
    quiet: bool = True,
    force: bool = False,
    base_dir: str | os.PathLike | None = None,
    model: str | None = None,
) -> FolderResult:
    """The folder ``compress_folder`` was given, byte for byte (each file's SHA-256 checked).
    ``base_dir``: the folder it was coded against (``--base``); every archive that needs a base
    is checked against its file there before anything is written. ``model``: an LM prior's
    model where it is now (``--model``); ``force`` also decodes with another one (``-f``)."""
    from lmgc_core.files.filecodec import StreamDecoder

    root, out = Path(src_dir), Path(out_dir)
    coded, copied, empty, hashes, archives = _read_folder_manifest(root)
    total = _check_listed(root, coded, copied, base_dir, archives, hashes)
    check_free_space(str(out), total, str(_existing(out)))  # replaced files are kept till the end
    inputs = [rel + SUFFIX for rel in coded] + copied + [FOLDER_MANIFEST]
    _check_apart(root, inputs, out, coded + copied)
    _check_no_links(out, coded + copied + empty)
    made = [out] if not out.exists() else []  # what a failure removes again (_undo)
    _prepare_output(out, force)  # after every check: a refusal writes nothing
    new = [rel for rel in coded + copied if not os.path.lexists(out / rel)]
    made += _new_folders(out, [str(Path(rel).parent) for rel in new] + empty)
    result = FolderResult(unchecked=[rel for rel in copied if rel not in hashes])
    with _Kept() as kept:
        try:
            mark = _mark_unfinished(out, new)  # first, before any file: removed last
            with Progress(total, "decompress", quiet) as bar:
                for rel in coded:
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    done = bar.done
                    base = _base_of(base_dir, rel)
                    kept.keep(out / rel)
                    _clear_special(out / rel)
                    archive = root / (rel + SUFFIX)
                    decoder = StreamDecoder(force, model, jobs)
                    if not _decode_path(archive, _replacing(out / rel, archive), bar, decoder,
                                        base):  # fmt: skip
                        result.lossy.append(rel)
                    result.model_used |= decoder.model_used
                    result.forced += ((rel, why) for why in decoder.forced)
                    size = (out / rel).stat().st_size
                    bar.chunk(max(0, size - (bar.done - done)), 0).finish()  # headers
                    result.coded.append(rel)
                for rel in copied:
                    kept.keep(out / rel)
                    _copy(root / rel, out / rel, bar, hashes.get(rel))
                    result.copied.append(rel)
                for rel in empty:
                    (out / rel).mkdir(parents=True, exist_ok=True)
        except BaseException:
            _undo(out, new, made)
            kept.put_back()
            raise
        mark.unlink()  # every file written and checked: the folder is whole
    _mirror_modes(root, out, made)
    result.leftovers = _leftovers(out)
    return result


def _check_no_links(out: Path, rels: Sequence[str]) -> None:
    """No entry is written through a link out of ``out`` or into a non-folder inside it: a
    link ``out/sub -> elsewhere`` (there already, or in the archive folder decompressed in
    place) sent ``sub/b.npy`` outside the output folder under ``--force``. A link to a folder
    inside ``out`` is followed; ``out`` itself may be a link: the user named it."""
    seen: set[Path] = set()
    real = out.resolve()
    for rel in rels:
        for up in reversed(Path(rel).parents[:-1]):  # sub, sub/deeper, ... (not out itself)
            if up in seen:
                continue
            seen.add(up)
            where = out / up
            if where.is_symlink() and _inside(where.resolve(), real):
                continue  # a link to a folder inside the output: what it leads to stays there
            if where.is_symlink() or (os.path.lexists(where) and not where.is_dir()):
                raise FolderError(
                    f"{where} is a link or not a folder: lmgc writes {rel} only into a real "
                    "folder inside the output folder (remove it, or choose another output)"
                )


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved) is a folder in ``folder`` (resolved) or ``folder`` itself."""
    return path.is_dir() and (path == folder or folder in path.parents)


def _clear_special(path: Path) -> None:
    """A link or special file where a decoded file goes is replaced, not written through: a
    single output may be a pipe or a device the user names, an entry of a folder may not (a
    link to a FIFO got the bytes outside the folder, a FIFO there hung the run)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        path.unlink()


def _check_listed(
    root: Path,
    coded: list[str],
    copied: list[str],
    base_dir: str | os.PathLike | None,
    archives: Mapping[str, str],
    hashes: Mapping[str, str],
) -> int:
    """Refuse a folder whose manifest lists files that are not there, archives that are not
    the ones compress wrote (``archives``: their XXH3-128s, where the manifest has them),
    copies no SHA-256 checks (``hashes``: manifests before 2026-12-06, folders without one)
    that lead out of the folder (a link in a hostile folder copied ``~/.ssh/id_rsa`` into the
    output), or whose archives' bases are missing or other files; returns the bytes
    decompressing it writes."""
    from lmgc_core.files.archive import ArchiveReader

    _check_files(root, coded, copied, archives, hashes)
    total = 0
    for rel in coded:
        with open(root / (rel + SUFFIX), "rb") as f:
            reader = ArchiveReader(f, rel)
            size = reader.source.get("size")
            total += size if type(size) is int else 0
            _check_base(reader, _base_of(base_dir, rel), rel, base_dir)
    return total + sum((root / rel).stat().st_size for rel in copied)


def _check_files(
    root: Path,
    coded: list[str],
    copied: list[str],
    archives: Mapping[str, str],
    hashes: Mapping[str, str],
) -> None:
    """:func:`_check_listed`'s checks of the folder's own files: every listed file there, each
    archive the one compress wrote, no unchecked copy leading out of the folder."""
    missing = [r + SUFFIX for r in coded if not (root / (r + SUFFIX)).is_file()]
    missing += [r for r in copied if not (root / r).is_file()]
    if missing:
        raise FolderError(f"{root}: files listed in {FOLDER_MANIFEST} are missing: "
                          + ", ".join(missing[:5]))  # fmt: skip
    inside = root.resolve()
    for rel in copied:
        if rel not in hashes and inside not in (root / rel).resolve().parents:
            raise FolderError(
                f"{root / rel} leads out of {root}, and {UNCHECKED}: not copied (copy the "
                "folder with its links followed, cp -rL, to decompress it)"
            )
    for rel in coded:
        if rel in archives and _archive_digest(root / (rel + SUFFIX)) != archives[rel]:
            raise FolderError(
                f"{root / (rel + SUFFIX)}: not the archive compress wrote (its XXH3-128 differs "
                "from the manifest's): another run wrote this folder at the same time, or the "
                "file comes from another folder"
            )


def _archive_digest(path: Path) -> str:
    """The XXH3-128 of a file's bytes (~7 GB/s: a second read of an archive costs little
    beside decoding it)."""
    from lmgc_core.files.base_file import file_digest

    with open(path, "rb") as f:
        return file_digest(f, ("xxh3_128",))[1]["xxh3_128"]


def test_folder(
    src_dir: str | os.PathLike,
    jobs: int = 1,
    quiet: bool = True,
    base_dir: str | os.PathLike | None = None,
    model: str | None = None,
    force: bool = False,
) -> FolderResult:
    """Every file of a folder ``lmgc compress MODEL_DIR -o OUT_DIR`` wrote, decoded (a copy:
    hashed) through the checks :func:`decompress_folder` makes, into nothing: what
    ``lmgc decompress --test`` and ``compress --verify`` run (``model``, ``force``: as
    :func:`decompress_folder`'s)."""
    from lmgc_core.files.filecodec import StreamDecoder
    from lmgc_core.files.writers import Discard

    root = Path(src_dir)
    coded, copied, _, hashes, archives = _read_folder_manifest(root)
    total = _check_listed(root, coded, copied, base_dir, archives, hashes)
    result = FolderResult(unchecked=[rel for rel in copied if rel not in hashes])
    with Progress(total, "test", quiet) as bar:
        for rel in coded:
            base = _base_of(base_dir, rel)
            decoder = StreamDecoder(force, model, jobs)
            if not _decode_path(root / (rel + SUFFIX), lambda: nullcontext(Discard()), bar,
                                decoder, base):  # fmt: skip
                result.lossy.append(rel)
            result.model_used |= decoder.model_used
            result.forced += ((rel, why) for why in decoder.forced)
            result.coded.append(rel)
        for rel in copied:
            _copy_into(root / rel, Discard(), bar, hashes.get(rel))
            result.copied.append(rel)
    return result


def describe_folder(src_dir: str | os.PathLike) -> dict[str, Any]:
    """What ``lmgc info`` and ``ls`` show of a folder ``lmgc compress`` wrote: each archive
    described as a file is (its headers, CRCs and lengths checked), by its file's name, the
    files copied as they were, by size, and the empty folders; after the checks decompress
    makes of the folder's own files (none missing, each archive the one compress wrote). A
    folder a decompress did not finish writing is named as such: its files may be missing."""
    from lmgc_core.files.describe import describe

    root = Path(src_dir)
    if marks := _unfinished_marks(root):
        raise FolderError(
            f"{root}: a decompress into this folder did not finish ({marks[0].name} is there), "
            "so files may be missing: decompress into it again with -f"
        )
    coded, copied, empty, hashes, archives = _read_folder_manifest(root)
    _check_files(root, coded, copied, archives, hashes)
    docs = {}
    for rel in coded:
        with open(root / (rel + SUFFIX), "rb") as f:
            docs[rel] = describe(f, os.fstat(f.fileno()).st_size, rel + SUFFIX)
    sizes = {rel: (root / rel).stat().st_size for rel in copied}
    original = sum(_source_bytes(doc) for doc in docs.values()) + sum(sizes.values())
    stored = sum(doc["totals"]["file_bytes"] for doc in docs.values()) + sum(sizes.values())
    return {
        "folder": str(root),
        "coded": docs,
        "copied": sizes,
        "empty_folders": empty,
        "totals": {
            "coded": len(docs),
            "copied": len(sizes),
            "original_bytes": original,
            "folder_bytes": stored,
            "ratio_percent": 100 * stored / original if original else 0.0,
        },
    }


def _source_bytes(doc: Mapping[str, Any]) -> int:
    """The bytes of the file an archive rebuilds (its tensors' where it records no size)."""
    size = (doc["source"] or {}).get("size")
    return size if type(size) is int else doc["totals"]["original_bytes"]


def _existing(path: Path) -> Path:
    """``path`` or its nearest folder that exists (where free space is asked)."""
    return next(p for p in (path, *path.absolute().parents) if p.is_dir())


class _Kept:
    """Files of the output folder a run replaces (``--force``), kept by a second, hidden hard
    link just before each is replaced (every write replaces its file by a rename, so the link
    keeps the old bytes and the name never goes missing): a failed run puts them back, so
    the folder is what it was, not a mix of old and new files; a finished one drops the links.
    They keep their room till then, so the free-space check counts none back. Where hard links
    cannot be made, files are replaced as before (and stay replaced after a failure)."""

    SUFFIX = ".kept"

    def __init__(self) -> None:
        self.kept: list[tuple[Path, Path]] = []

    def __enter__(self) -> _Kept:
        return self

    def keep(self, dst: Path) -> None:
        """Before ``dst`` is replaced: the file (or link) there, if any, linked aside."""
        if not os.path.lexists(dst) or (dst.is_dir() and not dst.is_symlink()):
            return  # nothing there, or a folder (writing over it fails)
        fd, tmp = temp_beside(dst, self.SUFFIX)
        os.close(fd)
        self.kept.append((Path(tmp), dst))  # first: an interrupt leaves it listed
        try:
            os.unlink(tmp)
            os.link(dst, tmp, follow_symlinks=False)
        except OSError:  # no hard links here: not kept
            self.kept.pop()
            Path(tmp).unlink(missing_ok=True)

    def put_back(self) -> None:
        while self.kept:
            tmp, dst = self.kept[-1]
            if _same_entry(tmp, dst):  # never replaced: a rename onto itself does nothing
                tmp.unlink()
            elif os.path.lexists(tmp):
                os.replace(tmp, dst)
            self.kept.pop()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None and self.kept:  # a put-back that did not finish (a second
            return  # Ctrl-C): what it did not put back stays, under its hidden name
        for tmp, _ in self.kept:
            tmp.unlink(missing_ok=True)


def _same_entry(a: Path, b: Path) -> bool:
    """Whether two names are links of one file (neither followed)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _leftovers(out: Path) -> list[str]:
    """Hidden ``.NAME.XXXXXXXX.kept`` links a killed run left in ``out`` (the only copy of a
    file it replaced) and ``.part`` files (an output it was writing): said, never removed."""
    if not out.is_dir():
        return []
    found = [
        p
        for suffix in (_Kept.SUFFIX, PART)
        for p in out.rglob(f".*{suffix}")
        if p.is_file() and not p.is_symlink()
    ]
    return sorted(p.relative_to(out).as_posix() for p in found)


def _write_manifest(path: Path, text: str) -> None:
    """The manifest written by a rename, as every other file of the folder (a hard link
    :class:`_Kept` made to the old one must not see the new text)."""
    with renamed_into_place(path) as f:
        f.write(text.encode("utf-8"))


def _new_folders(out: Path, folders: list[str]) -> list[Path]:
    """The folders under ``out`` that making ``folders`` (relative paths) would create: what a
    failure removes again. Each prefix is looked at once (deep paths cost their length, not its
    square)."""
    seen: set[str] = set()
    new = []
    for rel in folders:
        prefix = ""
        for part in Path(rel).parts:
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix not in seen and part != ".":
                seen.add(prefix)
                if not (out / prefix).exists():
                    new.append(out / prefix)
    return new


def _mirror_modes(root: Path, out: Path, made: list[Path]) -> None:
    """The folders a run made keep what the folders they mirror under ``root`` deny others (a
    private 0700 subfolder came back 0755, and the files in it readable by all): their bits
    less the umask (a 0777 source folder is not made world-writable), and always the owner's
    rwx (a read-only source folder would make the output one that a rerun cannot replace)."""
    umask = os.umask(0)
    os.umask(umask)
    for folder in made:
        twin = root / folder.relative_to(out)
        with contextlib.suppress(OSError):  # a twin that is gone, a file system without modes
            mode = stat.S_IMODE(os.stat(twin).st_mode) & ~umask | stat.S_IRWXU
            os.chmod(folder, mode)


def _undo(out: Path, new: list[str], made: list[Path]) -> None:
    """After a failed run (a damaged archive, Ctrl-C): remove the files it wrote that were not
    there before, and the folders it made, so a failure leaves no half-restored folder that
    could pass for the whole one (files it replaced under ``--force``: :class:`_Kept`)."""
    for rel in new:
        (out / rel).unlink(missing_ok=True)
    for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):  # deepest first
        with contextlib.suppress(OSError, ValueError):  # not empty: something else is in it
            folder.rmdir()


def _base_of(base_dir: str | os.PathLike | None, rel: str) -> Path | None:
    """The file of ``base_dir`` a folder's file ``rel`` is coded against (None: alone)."""
    path = None if base_dir is None else Path(base_dir) / rel
    return path if path is not None and path.is_file() else None


def _check_base(
    reader: Any, base: Path | None, where: str, base_dir: str | os.PathLike | None = None
) -> None:
    """An archive's base record against its file in the base folder (before any output)."""
    from lmgc_core.files.base_file import check_digests, check_record, file_digest
    from lmgc_core.files.writers import checked_hash

    if reader.base is None:
        return
    if base is None and base_dir is not None:  # not "give it with --base": it was given
        raise ConfigError(
            f"--base {base_dir} has no file {where}, which {where}{SUFFIX} was compressed against"
        )
    if base is None:
        check_record(reader.base, None, where)
    with open(base, "rb") as f:  # type: ignore[arg-type]
        size, digests = file_digest(f, (checked_hash(reader.base),))
    check_digests(reader.base, f"--base {base}", size, digests, where)


# -- the command line ----------------------------------------------------------------------------


def _say(message: str, err: bool = False) -> None:
    import click

    from lmgc_core.util.text import safe

    click.echo(safe(message), err=err)


def _say_lossy(result: FolderResult) -> None:
    from lmgc_core.files.filecodec import LOSSY_WARNING

    for rel in result.lossy:
        _say(f"warning: {rel}: {LOSSY_WARNING}", err=True)


def _say_model_unused(input: str, model: str | None, result: FolderResult) -> None:
    """A ``--model`` no file took, and each mismatch ``--force`` decoded past."""
    from lmgc_core.files.filecodec import FORCED, MODEL_UNUSED

    if model is not None and not result.model_used:
        _say(f"warning: {input}: {MODEL_UNUSED}", err=True)
    for rel, why in result.forced:
        _say(f"warning: {input}/{rel}: {FORCED.format(why)}", err=True)


def _say_leftovers(output: str, result: FolderResult) -> None:
    for rel in result.leftovers:
        why = (
            STALE_MARK
            if Path(rel).name.startswith(f".{UNFINISHED_MARK}.")
            else STALE_PART
            if rel.endswith(PART)
            else "left by an interrupted run, or by one still writing this folder: the bytes "
            "of a file it replaced; remove it, if unneeded, once no lmgc run writes here"
        )
        _say(f"warning: {output}/{rel}: {why}", err=True)


def compress_folder_command(
    input: str,
    output: str | None,
    force: bool,
    quiet: bool,
    jobs: int,
    pipeline: Any,
    base: str | None = None,
    verify: bool = False,
    chunk: int | None = None,
) -> None:
    """``lmgc compress MODEL_DIR -o OUT_DIR [--base OLD_DIR] [--verify] [--chunk-size N]``:
    files it could not code are listed on stderr."""
    if output is None:
        raise ConfigError(f"{input} is a folder: name the output folder with -o OUT_DIR")
    result = compress_folder(input, output, pipeline, jobs, quiet, force, base, chunk)
    if verify:  # the folder is in place by now: a failure says so, and removes nothing
        try:
            test_folder(output, jobs, True, base)
        except (LMGCError, OSError) as exc:
            raise FolderError(
                f"{output}: the folder just written does not decode to its sources, so do not "
                f"delete {input} (the folder is left as written): {exc}"
            ) from None
    for rel, reason in result.uncoded:
        _say(f"warning: {rel}: copied, not coded ({' '.join(reason.split())})", err=True)
    for rel, reason in result.skipped:
        _say(f"warning: {rel}: left out ({reason})", err=True)
    for rel, note in result.notes:  # a note names the file by its own name: by its path here
        note = note.removeprefix(f"{Path(rel).name}: ")
        _say(f"warning: {rel}: {' '.join(note.split())}", err=True)
    _say_leftovers(output, result)
    if not quiet:
        rate = 100 * result.written_bytes / result.source_bytes if result.source_bytes else 0.0
        _say(
            f"{input}: {result.source_bytes} -> {result.written_bytes} bytes ({rate:.2f}%) -> "
            f"{output} ({len(result.coded)} coded, {len(result.copied)} copied"
            f"{'; decoded again and verified' if verify else ''})"
        )


def decompress_folder_command(
    input: str,
    output: str | None,
    force: bool,
    quiet: bool,
    jobs: int,
    base: str | None = None,
    model: str | None = None,
) -> None:
    """``lmgc decompress OUT_DIR -o DIR [--base OLD_DIR] [--model M]``: the folder back, each
    file checked."""
    if output is None:
        raise ConfigError(f"{input} is a folder: name the output folder with -o DIR")
    result = decompress_folder(input, output, jobs, quiet, force, base, model)
    _say_lossy(result)
    _say_model_unused(input, model, result)
    _say_unchecked(result)
    _say_leftovers(output, result)
    if not quiet:
        _say(
            f"{input} -> {output} ({len(result.coded) - len(result.lossy)} files identical to "
            f"their sources, their hashes verified; {len(result.copied)} copied, "
            f"{len(result.copied) - len(result.unchecked)} of them checked)"
        )


def _say_unchecked(result: FolderResult) -> None:
    for rel in result.unchecked:
        _say(f"warning: {rel}: a copied file read but not checked ({UNCHECKED})", err=True)


def test_folder_command(
    input: str,
    quiet: bool,
    jobs: int,
    base: str | None = None,
    model: str | None = None,
    force: bool = False,
) -> None:
    """``lmgc decompress --test OUT_DIR [--base OLD_DIR] [--model M]``: every file checked,
    none written."""
    result = test_folder(input, jobs, quiet, base, model, force)
    _say_lossy(result)
    _say_model_unused(input, model, result)
    _say_unchecked(result)
    if not quiet:
        identical = len(result.coded) - len(result.lossy)
        copies = len(result.copied) - len(result.unchecked)
        _say(
            f"{input}: OK (identical to their sources, hashes verified: {identical} decoded "
            f"files; copies checked: {copies})"
        )
