"""Where the CLI reads and writes: files or ``-`` (stdin/stdout), never a half-written output.

Outputs go to a temporary file in the target's folder and are renamed over the target only
when the whole run succeeded (checksums included); a failure or Ctrl-C removes the temporary
file. Standard input is spooled to a temporary file, because archives and safetensors are read
out of order; standard output receives the finished file in one go.
"""

from __future__ import annotations

import errno
import os
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


@contextmanager
def open_input(name: str) -> Iterator[tuple[IO[bytes], int, str]]:
    """``(seekable binary file, size, display name)`` for a path or ``-``. Data errors raised
    inside name the input when they do not already."""
    shown = "<stdin>" if name == STDIO else name
    try:
        if name == STDIO:
            with tempfile.TemporaryFile() as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
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


def check_output(name: str, force: bool) -> None:
    """Refuse before any work is done: an existing output without ``--force``, binary data
    to a terminal."""
    if name == STDIO:
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write binary data to a terminal; use -o FILE")
        return
    path = Path(name)
    if path.is_dir():
        raise click.UsageError(f"{name} is a folder")
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


class DiskSpaceError(LMGCError):
    """The output would not fit in its folder's free space."""


def check_free_space(name: str, nbytes: int, folder: str | None = None) -> None:
    """Refuse up front an output of ``nbytes`` (what the archive declares) larger than the
    free space where it is written (``folder``, else the output's folder; for ``-``, the
    spool's temporary folder), rather than fill the disk and fail at the end."""
    if folder is None:
        folder = tempfile.gettempdir() if name == STDIO else str(Path(name).parent)
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
    spooled = name == STDIO or _special(Path(name))  # written into, once whole: never replaced
    with _where_full(name, spooled):
        yield from _atomic_output(name, like, spooled)


@contextmanager
def _where_full(name: str, spooled: bool) -> Iterator[None]:
    """A full disk named: the write's own error says only "No space left on device"."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC or exc.filename is not None:
            raise
        where = tempfile.gettempdir() if spooled else str(Path(name).parent)
        why = f"{name} is spooled there first (TMPDIR)" if spooled else f"writing {name}"
        raise OSError(exc.errno, f"{exc.strerror} ({why})", where) from None


def _atomic_output(name: str, like: str | None, spooled: bool) -> Iterator[IO[bytes]]:
    """:func:`atomic_output` once the output is checked."""
    path = Path(name)
    if spooled:
        with tempfile.TemporaryFile() as spool:
            yield spool
            spool.seek(0)
            if name == STDIO:
                shutil.copyfileobj(spool, sys.stdout.buffer, 1 << 20)
                sys.stdout.buffer.flush()
            else:
                with open(path, "wb") as dst:
                    shutil.copyfileobj(spool, dst, 1 << 20)
        return
    fd, tmp = temp_beside(path, ".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, _mode_like(like))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
