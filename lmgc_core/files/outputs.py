"""Where the CLI reads and writes: files or ``-`` (stdin/stdout), never a half-written output.

Outputs go to a temporary file in the target's folder and are renamed over the target only
when the whole run succeeded (checksums included); a failure or Ctrl-C removes the temporary
file. Standard input is spooled to a temporary file, because archives and safetensors are read
out of order; standard output receives the finished file in one go.
"""

from __future__ import annotations

import errno
import glob
import os
import select
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import click

from lmgc_core.util.errors import LMGCError, MismatchError, StreamError

STDIO = "-"


def is_stdout(name: str) -> bool:
    """``-``, or a path that is this process's standard output (``/dev/stdout``): written as
    ``-`` is (the summary line went into the data, or the path's link was replaced)."""
    return name == STDIO or _same_file(name, 1)


def entry_key(name: str | os.PathLike) -> tuple[str, str]:
    """Which directory entry ``name`` is: its folder's real path and its own name. A link
    there is an entry of its own (writing replaces the link, not what it leads to), so two
    names of one entry, and only those, compare equal."""
    path = Path(name)
    return os.path.realpath(path.parent), path.name


def _same_file(name: str, fd: int) -> bool:
    try:
        return os.path.samestat(os.stat(name), os.fstat(fd))
    except (OSError, ValueError):
        return False


@contextmanager
def open_input(name: str) -> Iterator[tuple[IO[bytes], int, str]]:
    """``(seekable binary file, size, display name)`` for a path or ``-``. Data errors raised
    inside name the input when they do not already. Standard input, and a path that is a
    pipe (``<(...)``, ``/dev/stdin``, a FIFO), are read whole into a temporary file first:
    archives and safetensors are read out of order."""
    shown = "<stdin>" if name == STDIO else name
    try:
        if name == STDIO or _not_seekable(name):
            with _open_stream(name) as fd, tempfile.TemporaryFile() as spool:
                with _where_full(STDIO, True, f"{shown} is read into a temporary file first"):
                    if fd is None:  # a stream with no descriptor (a test runner's)
                        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
                    else:
                        _read_all(fd, spool, shown)
                size = spool.tell()
                spool.seek(0)
                yield spool, size, shown
            return
        with open(name, "rb") as f:
            yield f, os.fstat(f.fileno()).st_size, shown
    except (StreamError, MismatchError) as exc:
        if shown in str(exc):
            raise
        raise type(exc)(f"{shown}: {exc}") from None


def _not_seekable(name: str) -> bool:
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False  # open() says why
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


@contextmanager
def _open_stream(name: str) -> Iterator[int | None]:
    """The file descriptor of standard input (checked; ``None`` for a stream without one) or
    of the pipe ``name``."""
    if name != STDIO:
        fd = os.open(name, os.O_RDONLY)
        try:
            yield fd
        finally:
            os.close(fd)
        return
    fd = _descriptor(sys.stdin, "input", "give an input file")
    if fd is not None and os.isatty(fd):
        raise click.UsageError("refusing to read binary data from a terminal; give an input file")
    yield fd


def _descriptor(stream: IO[str] | None, which: str, instead: str) -> int | None:
    """The descriptor of standard input or output, refused when closed (``<&-``, ``>&-``);
    ``None`` for a stream that has none (a test runner's)."""
    if stream is None:
        raise click.UsageError(f"standard {which} is closed: {instead}")
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError):  # io.UnsupportedOperation is a ValueError
        return None
    try:
        os.fstat(fd)
    except OSError:
        raise click.UsageError(f"standard {which} is closed: {instead}") from None
    return fd


def _read_all(fd: int, out: IO[bytes], shown: str) -> None:
    """Every byte of ``fd`` until its end, into ``out``. A pipe another process set
    non-blocking answers "no data yet" (EAGAIN): that is waited out, not taken for the end
    (shutil.copyfileobj took it for the end: 128 KiB of 12 MB were compressed, exit 0)."""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            select.select([fd], [], [])
            continue
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, shown) from None
        if not chunk:
            return
        out.write(chunk)


@contextmanager
def said_as(stream: str) -> Iterator[None]:
    """An error writing a standard stream named as that stream (``<stdout>``): ``> /dev/full``
    said only "No space left on device", beside an output written whole. A broken pipe stays
    as it is (the command stops quietly on it), and so does "not now" (EAGAIN: waited out)."""
    try:
        yield
    except (BrokenPipeError, BlockingIOError):
        raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, stream) from None


def _write_all(src: IO[bytes], fd: int) -> None:
    """Every byte of ``src`` to ``fd``, short writes continued: a pipe set non-blocking takes
    part of a write, or none (EAGAIN), which shutil.copyfileobj dropped: 131,072 of 12 MB
    arrived, with holes, exit 0."""
    while block := src.read(1 << 20):
        view = memoryview(block)
        while view:
            try:
                with said_as("<stdout>"):
                    done = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [])
                continue
            view = view[done:]


def check_output(name: str, force: bool) -> None:
    """Refuse before any work is done: an existing output without ``--force``, binary data
    to a terminal."""
    if is_stdout(name):
        _descriptor(sys.stdout, "output", "use -o FILE")  # closed: refused
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write binary data to a terminal; use -o FILE")
        return
    path = Path(name)
    if path.is_dir():
        raise click.UsageError(f"{name} is a folder")
    if _same_file(name, 2) and path.is_file():  # as root, -o /dev/stderr -f (stderr a file)
        raise click.UsageError(  # replaced the /dev/stderr link (a device is written into)
            f"{name} is this command's standard error, where its messages go: write the data "
            "to - (stdout) or a file"
        )
    if _is_fifo(path):  # a pipe (>(cmd), a FIFO): written into, nothing there is replaced
        return
    if os.path.lexists(path) and not force:  # a link that leads nowhere is there too
        raise click.UsageError(f"{name} exists; use --force to overwrite it")
    if name.endswith(("/", os.sep)):
        raise click.UsageError(f"{name} names a folder: the output of a file is a file")
    if not path.parent.is_dir():
        raise click.UsageError(f"{path.parent}: no such folder")


TEMP_EXTRA = 15
"""Bytes a temporary name adds to its file's (``.NAME.XXXXXXXX.part``)."""


def temp_beside(path: Path, suffix: str) -> tuple[int, str]:
    """``mkstemp`` in ``path``'s folder, named after it: hidden, ending in ``suffix`` (5
    characters), and cut so that it is no longer than NAME_MAX (255 bytes) where ``path``'s
    own name fits (a 241-byte name was refused for its temporary one's 256)."""
    name = os.fsencode(path.name)[: 255 - TEMP_EXTRA]
    return tempfile.mkstemp(prefix=f".{os.fsdecode(name)}.", suffix=suffix, dir=path.parent)


PART = ".part"
"""The suffix of an output being written (:func:`renamed_into_place`)."""
STALE_PART = (
    "a partial output left by a killed run, or by one still writing it: remove it once no lmgc "
    "run writes here"
)


def stale_parts(path: Path) -> list[Path]:
    """Temporary files of ``path``'s name beside it: what a run killed while writing ``path``
    left (or one writing it now). They are said, not removed: another run may own them."""
    name = os.fsdecode(os.fsencode(path.name)[: 255 - TEMP_EXTRA])
    return sorted(path.parent.glob(f".{glob.escape(name)}.*{PART}"))


class DiskSpaceError(LMGCError):
    """The output would not fit in its folder's free space."""


def check_free_space(name: str, nbytes: int, folder: str | None = None) -> None:
    """Refuse up front an output of ``nbytes`` (what the archive declares) larger than the
    free space where it is written (``folder``, else the output's folder; for ``-``, the
    spool's temporary folder), rather than fill the disk and fail at the end."""
    if folder is None:  # stdout, a pipe or a device is spooled whole in TMPDIR first
        spooled = is_stdout(name) or _special(Path(name))
        folder = tempfile.gettempdir() if spooled else str(Path(name).parent)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no answer (an odd file system): the write itself will tell
    if nbytes > free:
        raise DiskSpaceError(
            f"{name}: the output takes {nbytes} bytes, {folder} has {free} bytes free"
        )


def _mode_like(like: str | None) -> int:
    """The permission bits of the regular file ``like``, else ``0o666`` less the umask."""
    if like is not None and like != STDIO:
        try:
            st = os.stat(like)
            if stat.S_ISREG(st.st_mode):
                return stat.S_IMODE(st.st_mode)
        except OSError:
            pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _special(path: Path) -> bool:
    """An existing output that is not a regular file (a FIFO, ``/dev/null``, a terminal):
    renaming a temporary file over it would replace the device or pipe (a reader of the FIFO
    got nothing; as root, ``-o /dev/null -f`` deleted the device node)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


@contextmanager
def atomic_output(name: str, force: bool, like: str | None = None) -> Iterator[IO[bytes]]:
    """A file to write the output to; it becomes ``name`` (or goes to stdout) only when the
    ``with`` block finishes without an exception. ``like``: a file whose permission bits the
    output takes (the source's, as gzip and zstd keep them: a private file's archive stays
    private); else the umask's."""
    check_output(name, force)
    name = STDIO if is_stdout(name) else name
    spooled = name == STDIO or _special(Path(name))  # written into, once whole: never replaced
    yield from _atomic_output(name, like, spooled, force)


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
"""Write errors that mean 'no room': named with where the bytes were going."""


@contextmanager
def _where_full(name: str, spooled: bool, why: str | None = None) -> Iterator[None]:
    """A full disk (or a file size limit, a quota) named: the write's own error says only
    "No space left on device" ("File too large", "Disk quota exceeded")."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _FULL or exc.filename is not None:
            raise
        where = tempfile.gettempdir() if spooled else str(Path(name).parent)
        why = why or (f"{name} is spooled there first (TMPDIR)" if spooled else f"writing {name}")
        raise OSError(exc.errno, f"{exc.strerror} ({why})", where) from None


def _atomic_output(name: str, like: str | None, spooled: bool, force: bool) -> Iterator[IO[bytes]]:
    """:func:`atomic_output` once the output is checked."""
    path = Path(name)
    if spooled:
        with tempfile.TemporaryFile() as spool:
            with _where_full(name, True):
                yield spool
            spool.seek(0)
            if name == STDIO:
                sys.stdout.flush()
                fd = _descriptor(sys.stdout, "output", "use -o FILE")
                if fd is None:  # a stream with no descriptor (a test runner's)
                    shutil.copyfileobj(spool, sys.stdout.buffer, 1 << 20)
                    sys.stdout.buffer.flush()
                else:
                    _write_all(spool, fd)
            else:
                with _where_full(name, False, f"writing {name}"), open(path, "wb") as dst:
                    shutil.copyfileobj(spool, dst, 1 << 20)
        return
    with renamed_into_place(path, like, force) as f:
        yield f


@contextmanager
def renamed_into_place(
    path: Path, like: str | None = None, force: bool = True
) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path`` that becomes ``path`` by a rename only when the block
    ends without an exception (else it is removed); its permission bits are ``like``'s, else
    the umask's (a temporary file's own are 0600). ``force``: see :func:`_put_in_place`."""
    try:
        fd, tmp = temp_beside(path, PART)
    except OSError as exc:  # the output's folder, not the temporary name, is what fails
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with _where_full(str(path), False), os.fdopen(fd, "w+b") as f:  # readable: --verify
            yield f
        os.chmod(tmp, _mode_like(like))
        _put_in_place(tmp, path, force)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _put_in_place(tmp: str, path: Path, force: bool) -> None:
    """The finished output renamed into place; without ``force``, never over a file that
    appeared meanwhile (another command's output of the same name): a link, which fails
    where a name exists, instead of a rename, which replaces it."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise click.UsageError(
            f"{path} appeared while this command ran; use --force to overwrite it"
        ) from None
    except OSError:  # no hard links here: as close as a rename gets
        if os.path.lexists(path):
            raise click.UsageError(f"{path} appeared while this command ran") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)
