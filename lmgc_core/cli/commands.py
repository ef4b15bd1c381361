"""The ``lmgc`` command line: compress, decompress, info, ls, estimate, plugins (+ plugin commands).

Every expected failure prints one line ``error: ...`` on stderr. Exit status: 0 success, 2 bad
usage (unknown or invalid options, component names or configuration values, an output that
exists without ``--force``), 1 everything else: bad data (a damaged or malformed input or
stream, a failed checksum), a missing plugin or package, an I/O error, an output larger than
the free disk space; 130 Ctrl-C (SIGINT), 143 SIGTERM, both after the same cleanup (no
temporary output left). ``LMGC_DEBUG=1`` shows tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

import click

from lmgc_core.cli.options import JOBS_OPTION, build_pipeline, check_model_path, pipeline_options
from lmgc_core.components import registry
from lmgc_core.files.outputs import (
    STDIO,
    atomic_output,
    check_free_space,
    check_output,
    entry_key,
    is_stdout,
    open_input,
    said_as,
)
from lmgc_core.util import interrupts
from lmgc_core.util.errors import ConfigError, LMGCError, StreamError
from lmgc_core.util.interrupts import Terminated
from lmgc_core.util.text import safe

USAGE_ERRORS = (ConfigError,)
DEBUG_VARIABLE = "LMGC_DEBUG"
EXTRAS = {
    "zarr": "zarr", "dask": "dask", "distributed": "dask", "safetensors": "formats",
    "torch": "bench", "sklearn": "bench", "matplotlib": "bench", "zstandard": "bench",
    "fpzip": "bench", "pcodec": "bench", "blosc2": "bench", "PIL": "bench", "soundfile": "bench",
}  # fmt: skip
"""The extra that installs a module a command imported and did not find (pyproject.toml)."""
FORMAT_CHOICE = click.Choice(["npy", "npz", "safetensors", "raw"], case_sensitive=False)


def _debugging() -> bool:
    """``LMGC_DEBUG`` set to anything but empty, 0, false, no or off (as ``LMGC_PROGRESS``)."""
    from lmgc_core.util.progress import OFF_VALUES  # only on an error: not at every start-up

    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", *OFF_VALUES)


def _one_line(message: str) -> str:
    return safe(" ".join(str(message).split()))


def _exit(message: str, code: int) -> NoReturn:
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(code)


def _interrupted(exc: click.Abort) -> NoReturn:
    if isinstance(exc.__cause__, Terminated):
        _signalled(exc.__cause__)
    _exit("interrupted", 128 + signal.SIGINT)


def _signalled(exc: Terminated) -> NoReturn:
    _exit("hung up" if exc.signum != signal.SIGTERM else "terminated", 128 + exc.signum)


def _broken_pipe() -> NoReturn:
    """The reader went away (``lmgc info x | head``): stop quietly with status 1, as click
    does when the pipe breaks inside a command."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(1)


class _Group(click.Group):
    """Turns every failure into one ``error:`` line and an exit status (see the module doc).
    Plugins' commands are added when first looked for (a name that is not built in, the
    command list of ``--help``), so a built-in command does not load every plugin before its
    own work starts: ``compress`` starts hashing its input first, ``ls`` and ``--version``
    need no plugin at all."""

    _plugins_added = False

    def add_plugin_commands(self) -> None:
        """Let every plugin add its commands, once (a broken one is noted, never fatal)."""
        if not self._plugins_added:
            self._plugins_added = True
            registry.add_commands(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is None and not self._plugins_added:
            self.add_plugin_commands()
            found = super().get_command(ctx, cmd_name)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Terminated as exc:  # not click's Ctrl-C handling: no "^C" echo's blank line
            _signalled(exc)

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        registry.stdout_is_data()
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
            _flush_stdout()
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx:  # a bare `lmgc`: its
                click.echo(exc.ctx.get_help())  # help as --help shows it (click 8.2 raises
                sys.exit(0)  # it, which was squashed into one "error:" line)
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _exit(exc.format_message() + hint, 2)
        except click.ClickException as exc:
            _exit(exc.format_message(), exc.exit_code)
        except click.Abort as exc:
            _interrupted(exc)
        except USAGE_ERRORS as exc:
            _exit(str(exc), 2)
        except LMGCError as exc:
            _exit(str(exc), 1)
        except BrokenPipeError:
            _broken_pipe()
        except OSError as exc:
            _exit(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1)
        except MemoryError:
            _exit("out of memory", 1)
        except ModuleNotFoundError as exc:  # a command of an extra (bench, zarr...) not installed
            if _debugging() or exc.name is None:
                raise
            extra = EXTRAS.get(exc.name.split(".")[0])
            hint = f"pip install 'lmgc[{extra}]'" if extra else f"pip install {exc.name}"
            _exit(f"this needs {exc.name}, which is not installed ({hint})", 1)
        except Exception as exc:  # unexpected (a plugin command's ValueError, or a bug)
            if _debugging():
                raise
            _exit(f"{exc} ({type(exc).__name__}; {DEBUG_VARIABLE}=1 shows where)", 1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group)
@click.version_option(package_name="lmgc")
def cli() -> None:
    """Lossless compression of gradients and weights with language models as priors."""


def _quiet_option(f: Callable) -> Callable:
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")(
        f
    )


def _force_option(help_text: str) -> Callable[[Callable], Callable]:
    return click.option("-f", "--force", is_flag=True, help=help_text)


def _say(quiet: bool, output: str, message: str) -> None:
    """The summary line: on stdout, or stderr when stdout carries the data (``-``, or a path
    that is stdout: ``-o /dev/stdout``). Nothing where stdout is closed."""
    err = is_stdout(output)
    if quiet or (not err and sys.stdout is None):
        return
    with said_as("<stderr>" if err else "<stdout>"):
        click.echo(safe(message), err=err)


def _flush_stdout() -> None:
    """What is left of the summary line, written now: a closed pipe shows up here, not at
    interpreter exit; a full one is said as stdout's (:func:`said_as`)."""
    if sys.stdout is None:  # closed (>&-): nothing was written to it
        return
    with said_as("<stdout>"):
        sys.stdout.flush()


def _restored_name(archive: str) -> str:
    """The file ``X.lmgc`` comes back as: ``X``, and ``./-`` for ``-.lmgc`` (``-`` would be
    standard output); a UsageError for ``.lmgc`` (no name is left: "error:  is a folder")."""
    name = archive[: -len(".lmgc")]
    if not os.path.basename(name):
        raise click.UsageError(f"{archive}: its output would have no name: name it with -o")
    return f".{os.sep}{name}" if name == STDIO else name


def _default_output(input: str, output: str | None) -> str:
    if output is not None:
        return output
    return STDIO if input == STDIO else input + ".lmgc"


BASE_OPTION = click.option(
    "--base",
    type=click.Path(exists=True),
    help="Reference file: code tensors against (compress) or decode them with (decompress) "
    "its tensors of the same name, dtype and shape (a folder for a folder: file by file).",
)


INPUTS_ARGUMENT = click.argument(
    "inputs", nargs=-1, required=True, metavar="INPUT...",
    type=click.Path(exists=True, allow_dash=True),
)  # fmt: skip


def _check_several(inputs: tuple[str, ...], output: str | None) -> None:
    """Several inputs: each goes next to itself, none through stdin or stdout."""
    if len(inputs) > 1 and output is not None:
        raise click.UsageError("-o names one output; with several inputs, each goes next to itself")
    if len(inputs) > 1 and STDIO in inputs:
        raise click.UsageError("'-' (stdin) can only be the one input")


def _check_apart(inputs: tuple[str, ...], outputs: list[str]) -> None:
    """No output of a command of several inputs is one of its inputs: ``compress -f x
    x.lmgc`` replaced the user's ``x.lmgc`` with x's archive before it read it."""
    read = {entry_key(i) for i in inputs}
    if clash := next((o for o in outputs if entry_key(o) in read), None):
        raise click.UsageError(f"{clash} is an input and would be written as an output too")


@cli.command()
@INPUTS_ARGUMENT
@click.option("-o", "--output", help="Output file, '-' for stdout. Default: INPUT.lmgc")
@click.option("--dtype", help="Element type of a raw input file (e.g. float32, bfloat16).")
@click.option(
    "--format",
    "fmt",
    type=FORMAT_CHOICE,
    help="Input format (default: from the name, else the file's magic bytes).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1 << 10),
    default=None,
    metavar="BYTES",
    help="Code tensors larger than this in chunks (bounds memory; default 16 MiB).",
)
@BASE_OPTION
@click.option(
    "--series",
    is_flag=True,
    help="Checkpoints in order: code each INPUT against the one before it (the first alone, or "
    "against --base); decompress them in the same order.",
)
@click.option(
    "--keyframe",
    type=click.IntRange(min=1),
    metavar="K",
    help="With --series: code every K-th INPUT alone (the first is one), so reading one back "
    "needs at most K-1 others.",
)
@_force_option("Overwrite OUTPUT if it exists.")
@click.option(
    "--verify",
    is_flag=True,
    help="Decode each output again before it is kept and check that it gives back the source "
    "byte for byte (with lossy stages: their reconstruction, by its checksums), as decompress "
    "--test does; a failure keeps nothing and exits 1.",
)
@_quiet_option
@JOBS_OPTION
@pipeline_options
def compress(
    inputs: tuple[str, ...],
    output: str | None,
    base: str | None,
    series: bool,
    keyframe: int | None,
    **kw: Any,
) -> None:
    """Compress .npy, .npz, .safetensors, torch.save or raw files, or model folders ('-':
    stdin) into lmgc archives that `lmgc decompress` turns back into the same files, byte for
    byte. With --base OLD, each tensor of the same name, dtype and shape in OLD is coded against
    it (a checkpoint against the one before it, a fine-tune against its base); decompressing then
    needs OLD. With --series, each INPUT is coded against the INPUT before it (see
    --keyframe)."""
    from lmgc_core.files.series import chain

    _check_several(inputs, output)
    if keyframe is not None and not series:
        raise click.UsageError("--keyframe needs --series")
    if series and any(Path(i).is_dir() for i in inputs):
        raise click.UsageError("--series takes checkpoint files, not folders")
    _check_references(inputs, base, series)
    pairs = chain(inputs, keyframe, base) if series else [(i, base) for i in inputs]
    if (series and len(inputs) > 1) or base is not None:  # refused before a file is written
        build_pipeline(**{k: v for k, v in kw.items() if k not in _RUN}).check_deltas("--base")
    if len(inputs) > 1:  # every output checked before the first is written
        if folder := next((i for i in inputs if Path(i).is_dir()), None):
            raise click.UsageError(f"{folder} is a folder: it needs -o, so it is the one input")
        _check_apart(inputs, [_default_output(input, None) for input in inputs])
        for input in inputs:
            check_output(_default_output(input, None), kw["force"])
    for input, reference in pairs:
        _compress_one(input, output, base=reference, **kw)


_RUN = ("dtype", "fmt", "chunk_size", "force", "quiet", "jobs", "verify")
"""``compress``'s options that are not the pipeline's."""


def _check_references(inputs: tuple[str, ...], base: str | None, series: bool) -> None:
    """No input listed twice by name (``--series d d`` coded the second against the first,
    itself, and replaced the first's archive: its archive would be written twice), and, in a
    series, no ``--base`` that is one of its inputs (``--series a b --base b``: a chain that
    comes back to itself, which no archive decodes). One file under two names is two inputs
    (their archives differ); a plain ``--base`` that is the input itself is only said."""
    outputs: dict[tuple[str, str], str] = {}
    for input in inputs:
        if input == STDIO:
            continue
        key = entry_key(_default_output(input, None))
        if key in outputs:
            raise click.UsageError(f"{input} is listed twice ({outputs[key]})")
        outputs[key] = input
    if base is None or not os.path.exists(base):
        return
    same = next((i for i in inputs if i != STDIO and _same_path(i, base)), None)
    if same is not None and series:
        raise click.UsageError(
            f"--base {base} is {same}, which this series compresses: the chain would come back "
            "to itself, and no archive of it could be decoded"
        )
    if same is not None:
        click.echo(
            f"warning: --base {base} is {same} itself: its archive holds only the differences, "
            "so decoding it needs that very file (keep it)",
            err=True,
        )


def _same_path(a: str, b: str) -> bool:
    """Whether two paths name one existing file (``False`` where either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _compress_one(
    input: str,
    output: str | None,
    dtype: str | None,
    fmt: str | None,
    chunk_size: int | None,
    base: str | None,
    force: bool,
    quiet: bool,
    jobs: int,
    verify: bool,
    **kw: Any,
) -> None:
    """One INPUT of ``lmgc compress`` (against ``base`` when given)."""
    from lmgc_core.files.source_hash import FileHash

    _check_base_kind(input, base)
    if Path(input).is_dir():  # a model folder: every tensor file coded, the rest copied
        from lmgc_core.files.folders import compress_folder_command

        if dtype is not None or fmt is not None:  # they were ignored, silently
            raise click.UsageError(
                "--dtype and --format apply to a file; a folder's files are read by their own "
                "formats"
            )
        _check_output_is_new(input, output, base)
        return compress_folder_command(
            input, output, force, quiet, jobs, build_pipeline(**kw), base, verify, chunk_size
        )
    output = _default_output(input, output)
    _check_output_is_new(input, output, base)
    check_output(output, force)
    # The input's SHA-256 starts before the coding modules (numpy, the pipeline) load: with a
    # spare core it runs while this thread imports, not beside the first chunks.
    with (
        open_input(input) as (src, size, name),
        FileHash(src, jobs) as source_hash,
        ExitStack() as stack,
    ):
        from lmgc_core.files.base_file import encoder_for
        from lmgc_core.files.filecodec import DEFAULT_CHUNK_BYTES, compress_file
        from lmgc_core.files.readers import scan
        from lmgc_core.util.progress import Progress

        pipeline = build_pipeline(**kw)
        chunk_bytes = chunk_size or DEFAULT_CHUNK_BYTES
        encoder = encoder_for(pipeline, base, stack, chunk_bytes, fmt, dtype)
        layout = scan(src, size, name, fmt.lower() if fmt else None, dtype)
        _warn(layout.notes)  # e.g. an npz member no zlib level re-deflates identically
        seen = len(layout.notes)
        total = sum(t.nbytes for t in layout.tensors)
        with Progress(total, "compress", quiet) as bar, atomic_output(output, force, input) as out:
            result = compress_file(
                src, layout, Path(name).name, out, encoder, bar, chunk_bytes,
                jobs, source_hash,
            )  # fmt: skip
            out.flush()
            written = out.tell()
            checked = _verify(out, output, base, jobs) if verify else ""
        _warn(layout.notes[seen:])  # what coding found: lossy stages
    rate = 100 * written / result.source if result.source else 0.0
    summary = f"{name}: {result.source} -> {written} bytes ({rate:.2f}%) -> {output}"
    _say_stale_parts(output)
    _say(quiet, output, f"{summary} (verified: {checked})" if verify else summary)


def _verify(out: Any, output: str, base: str | None, jobs: int) -> str:
    """``--verify``: the archive just written into ``out`` (not yet in its place) decoded as
    ``decompress --test`` decodes it; a failure is the run's, so nothing is kept."""
    out.seek(0)
    try:
        return _test_archive(out, output, False, None, base, True, jobs)
    except LMGCError as exc:
        raise StreamError(
            f"{output}: the archive just written does not decode to its source, so it is not "
            f"kept: {exc}"
        ) from None


def _warn(notes: Iterable[str]) -> None:
    for note in notes:
        click.echo(f"warning: {_one_line(note)}", err=True)


def _output_format(
    output: str, fmt: str | None, source_format: str | None, n: int, named: bool = True
) -> str:
    """What decompression writes: ``--format``; else, for an output the user ``named``, the
    format its name says; else the source's own (with no ``-o``, a file comes back as it was,
    byte for byte: a ``.npy`` coded as raw bytes is not made into another ``.npy``)."""
    from lmgc_core.files.readers import format_of_name

    if fmt:
        return fmt.lower()
    if not named and source_format:
        return source_format
    by_name = None if output == STDIO else format_of_name(output)
    if by_name:
        return by_name
    if source_format:
        return source_format
    return "raw" if n == 1 else "npz"


def _output_size(reader: Any, tensors: list[Any], fmt: str) -> int:
    """The bytes decompression will write, as the archive declares them: the source's size
    for a rebuild, else the arrays' data (a conversion's headers aside)."""
    from lmgc_core.files.writers import arrays

    if fmt == reader.format and reader.segments is not None:
        size = reader.source.get("size")
        if type(size) is int and size >= 0:
            return size
    return sum(t.nbytes for _, t in arrays(tensors, fmt))


@cli.command()
@INPUTS_ARGUMENT
@click.option("-o", "--output", help="Output file, '-' for stdout. Default: INPUT without .lmgc.")
@click.option(
    "--format",
    "fmt",
    type=FORMAT_CHOICE,
    help="Output format (default: from the output name, else the source's).",
)
@_force_option(
    "Overwrite OUTPUT if it exists, and decode even if the prior/model differs from the "
    "stream's (the checksum still guards)."
)
@click.option("--model", help="Model file or folder, if it lives elsewhere on this machine.")
@BASE_OPTION
@click.option(
    "-t",
    "--test",
    is_flag=True,
    help="Decode every INPUT through all its checks (a rebuilt file's hash included) and write "
    "nothing, as gzip -t does.",
)
@_quiet_option
@JOBS_OPTION
def decompress(
    inputs: tuple[str, ...], output: str | None, base: str | None, test: bool, **kw: Any
) -> None:
    """Decompress lmgc archives or streams ('-': stdin), verifying every checksum; with no -o
    each source file comes back under its own name, byte for byte. An archive compressed
    against a base (--base, --series) is decoded with the file given by --base, or with the
    file an archive before it in the same command decoded (list a series in order)."""
    if test and (output is not None or kw.get("fmt")):
        raise click.UsageError("--test writes nothing: it takes neither -o nor --format")
    _check_several(inputs, output)
    if len(inputs) == 1:
        return _decompress_one(inputs[0], output, base=base, test=test, **kw)
    plan = _series_bases(inputs, base, kw["force"], test)
    if kw.get("fmt") and any(reference is not None for _, reference in plan):
        raise click.UsageError(  # the next archive's base is the source's bytes, not these
            "--format with a series: decompress it first, then convert the files one by one"
        )
    for input, reference in plan:
        _decompress_one(input, None, base=reference, test=test, **kw)


def _series_bases(
    inputs: tuple[str, ...], base: str | None, force: bool, test: bool = False
) -> list[tuple[str, str | None]]:
    """Each archive with the base it is decoded with (see :func:`series.bases`), every output
    checked before the first is written (``test``: nothing is written, so an earlier archive's
    output serves as a base only where that file is on disk already)."""
    from lmgc_core.files.archive import ArchiveReader
    from lmgc_core.files.series import Planned, bases

    plan = []
    outputs: set[str] = set()
    for input in inputs:
        if Path(input).is_dir() or not input.lower().endswith(".lmgc"):
            raise click.UsageError(f"{input}: with several inputs, each must be an .lmgc archive")
        output = _restored_name(input)
        if os.path.abspath(output) in outputs:
            raise click.UsageError(f"{input} is listed twice: its output would be written twice")
        outputs.add(os.path.abspath(output))
        if not test:
            check_output(output, force)
        with open_input(input) as (src, _, name):
            reader = ArchiveReader(src, name)
            source = reader.source if isinstance(reader.source, dict) else {}
            sha = source.get("sha256") if isinstance(source.get("sha256"), str) else None
            plan.append(Planned(input, output, sha, getattr(reader, "base", None)))
    if not test:
        _check_apart(inputs, [p.output for p in plan])
    chosen = bases(plan, base)
    written = {p.output for p in plan} if test else set()
    for input, reference in zip(inputs, chosen, strict=True):
        if reference in written and not os.path.lexists(reference):
            raise click.UsageError(
                f"{input} is coded against {reference}, which --test does not write: "
                "decompress the series, or test it where that file is"
            )
    return list(zip(inputs, chosen, strict=True))


def _decompress_one(
    input: str,
    output: str | None,
    fmt: str | None,
    force: bool,
    model: str | None,
    base: str | None,
    quiet: bool,
    jobs: int,
    test: bool = False,
) -> None:
    """One INPUT of ``lmgc decompress`` (with ``base`` when given; ``test``: into nothing)."""
    from lmgc_core.files.filecodec import decompress_archive
    from lmgc_core.util.progress import Progress

    _check_base_kind(input, base)
    if Path(input).is_dir():  # a folder written by `lmgc compress MODEL_DIR -o OUT_DIR`
        from lmgc_core.files.folders import decompress_folder_command, test_folder_command

        if fmt is not None:  # it was ignored, silently
            raise click.UsageError("--format applies to an archive of a file, not a folder")
        check_model_path(model)
        if test:
            return test_folder_command(input, quiet, jobs, base, model, force)
        _check_output_is_new(input, output, base)
        return decompress_folder_command(input, output, force, quiet, jobs, base, model)
    if test:
        check_model_path(model)
        with open_input(input) as (src, _, name):
            checked = _test_archive(src, name, force, model, base, quiet, jobs)
        return _say(quiet, "", f"{name}: OK ({checked})")
    named = output is not None
    if output is None:
        if input != STDIO and not input.lower().endswith(".lmgc"):
            raise click.UsageError(f"{input} does not end in .lmgc: name the output with -o")
        output = STDIO if input == STDIO else _restored_name(input)
    _check_output_is_new(input, output, base)
    check_output(output, force)
    check_model_path(model)
    with open_input(input) as (src, _, name), ExitStack() as stack:
        reader, archive = _open_archive(src, name, force, model, base, jobs, stack)
        target = _output_format(output, fmt, reader.format, len(reader.entries), named)
        if not named and reader.format and target != reader.format:  # a.npy held safetensors
            raise click.UsageError(
                f"--format {target} without -o would write a {target} file under the source's "
                f"name {output}: name the output with -o"
            )
        if target != reader.format:  # a conversion writes the coded arrays only
            from lmgc_core.files.npz import NOT_AN_ARRAY, NOT_CODED

            left_out = [n for n in reader.notes if NOT_CODED in n or NOT_AN_ARRAY in n]
            _warn(f"converting to {target} leaves out what {name} kept as bytes: {note}"
                  for note in left_out)  # fmt: skip
            _warn(_packed_as_bytes(archive.tensors, target, name))
        check_free_space(output, _output_size(reader, archive.tensors, target))
        bar = Progress(archive.total_bytes(), "decompress", quiet)
        archive.progress = bar
        with bar, atomic_output(output, force, input) as out:
            identical = decompress_archive(reader, archive, target, out)
    _say_stale_parts(output)
    _warn_lossy(reader)
    _warn_decoder(name, archive.decoder)
    _say(quiet, output, f"{name} -> {output} ({_what_checked(reader, identical)})")


def _packed_as_bytes(tensors: list[Any], target: str, name: str) -> list[str]:
    """Warnings for the tensors of a dtype numpy has no type for (safetensors' packed ``F4``,
    ``F6_*``, or one newer than this lmgc), which a conversion to any format but safetensors
    writes as their raw bytes: ``uint8`` of another shape, which nothing else would say."""
    if target == "safetensors":  # keeps their dtype and shape
        return []
    return [
        f"converting to {target} writes {name}'s tensor {t.name!r} ({t.tag}, shape "
        f"{list(t.declared_shape)}) as its {t.nbytes} bytes (uint8): numpy has no {t.tag}"
        for t in tensors
        if t.declared_shape is not None
    ]


def _open_archive(
    src: Any, name: str, force: bool, model: str | None, base: str | None, jobs: int,
    stack: ExitStack,
) -> tuple[Any, Any]:  # fmt: skip
    """The archive ``src`` read, and its decoder, with ``base`` attached where it needs one."""
    from lmgc_core.files.archive import ArchiveReader
    from lmgc_core.files.filecodec import ArchiveDecoder, StreamDecoder

    reader = ArchiveReader(src, name)
    decoder = StreamDecoder(force, model, jobs)
    if getattr(reader, "base", None) is not None or base is not None:
        _use_base(reader, decoder, base, name, stack)
    return reader, ArchiveDecoder(reader, decoder)


def _test_archive(
    src: Any, name: str, force: bool, model: str | None, base: str | None, quiet: bool,
    jobs: int,
) -> str:  # fmt: skip
    """Decode the archive ``src`` as decompressing it with no ``-o`` would, through every
    check, into nothing; returns what was checked (a failed check raises)."""
    from lmgc_core.files.filecodec import decompress_archive
    from lmgc_core.files.writers import Discard
    from lmgc_core.util.progress import Progress

    with ExitStack() as stack:
        reader, archive = _open_archive(src, name, force, model, base, jobs, stack)
        target = _output_format(STDIO, None, reader.format, len(reader.entries), named=False)
        bar = Progress(archive.total_bytes(), "test", quiet)
        archive.progress = bar
        with bar:
            identical = decompress_archive(reader, archive, target, Discard())
    _warn_lossy(reader)
    _warn_decoder(name, archive.decoder)
    return _what_checked(reader, identical)


def _say_stale_parts(output: str) -> None:
    """Partial outputs of this name that killed runs left beside it (hidden, and never said)."""
    if output == STDIO:
        return
    from lmgc_core.files.outputs import STALE_PART, stale_parts

    _warn(f"{part}: {STALE_PART}" for part in stale_parts(Path(output)))


def _warn_lossy(reader: Any) -> None:
    """An archive lossy stages made is warned of (even with -q), as a folder's files are."""
    from lmgc_core.files.filecodec import LOSSY_NOTE, LOSSY_WARNING

    if LOSSY_NOTE in reader.notes:
        _warn([f"{reader.where}: {LOSSY_WARNING}"])


def _warn_decoder(name: str, decoder: Any) -> None:
    """A ``--model`` no stream took is said (it was dropped without a word): decoding needs
    none here, so the output is right, but the user meant the model to be used. So is each
    mismatch ``--force`` went past (given to overwrite the output, it also did that)."""
    from lmgc_core.files.filecodec import FORCED, MODEL_UNUSED

    if decoder.model is not None and not decoder.model_used:
        _warn([f"{name}: {MODEL_UNUSED}"])
    _warn(f"{name}: {FORCED.format(why)}" for why in dict.fromkeys(decoder.forced))


def _what_checked(reader: Any, identical: bool) -> str:
    """The summary's words for what a decode checked."""
    from lmgc_core.files import writers

    if not identical:
        return "checksums verified"
    how = (  # a compact archive's bytes all come through its stream's own checks
        "its stream's checksums"
        if reader.compact
        else writers.HASH_NAMES[writers.checked_hash(reader.source)]
    )
    return f"identical to the source, {how} verified"


def _check_output_is_new(input: str, output: str | None, base: str | None) -> None:
    """Usage errors, before any work: a folder to stdout (it made a folder named ``-``), and
    an output that is the base (``--base old -o old -f`` replaced the base the archive needs,
    so it could never be decoded). An output that is the input is allowed with ``--force``
    (in-place compression: the input is read whole before the output replaces it)."""
    if output is None:
        return
    if output == STDIO:
        if input != STDIO and Path(input).is_dir():
            raise click.UsageError(f"{input} is a folder: name an output folder with -o, not -")
        return
    if base is not None and _same_path(output, base):
        raise click.UsageError(f"{output} is the base (--base): name another output")


def _check_base_kind(input: str, base: str | None) -> None:
    """A folder's base is a folder (file by file), a file's base a file."""
    if base is not None and Path(input).is_dir() != Path(base).is_dir():
        kind = "a folder" if Path(input).is_dir() else "a file"
        raise ConfigError(f"--base {base}: {input} is {kind}, so its base must be {kind} too")


def _use_base(reader: Any, decoder: Any, base: str | None, name: str, stack: ExitStack) -> None:
    """Check ``--base`` against the archive's record (a usage error, before anything is
    written, for a missing, other or truncated base) and hand its chunks to the decoder."""
    from lmgc_core.files.base_file import attach

    if not attach(reader, decoder, base, name, stack):
        click.echo(f"warning: {name} was not coded against a base; --base is not used", err=True)


# -- inspection ------------------------------------------------------------------------------------


def _describe(path: str) -> dict[str, Any]:
    from lmgc_core.files.describe import describe

    with open_input(path) as (src, size, name):
        return describe(src, size, name)


def _is_folder(path: str) -> bool:
    return path != STDIO and Path(path).is_dir()


@cli.command()
@click.argument("input", type=click.Path(exists=True, allow_dash=True))
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document: members, totals, headers."
)
def info(input: str, as_json: bool) -> None:
    """Show an archive's or stream's source, tensors, sizes, pipeline and headers (a folder
    compress wrote: each archive's); every member is checked (CRCs, lengths), so a damaged
    file exits with status 1."""
    from lmgc_core.files.describe import folder_info_lines, info_lines
    from lmgc_core.files.folders import describe_folder

    folder = _is_folder(input)
    doc = describe_folder(input) if folder else _describe(input)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for line in folder_info_lines(doc) if folder else info_lines(doc):
        click.echo(line)


@cli.command(name="ls")
@click.argument("input", type=click.Path(exists=True, allow_dash=True))
def ls_command(input: str) -> None:
    """List an archive's tensors (a folder compress wrote: every archive's, and the files it
    copied): name, dtype, shape, original and compressed size, ratio."""
    from lmgc_core.files.describe import folder_ls_lines, ls_lines
    from lmgc_core.files.folders import describe_folder

    if _is_folder(input):
        lines = folder_ls_lines(describe_folder(input))
    else:
        lines = ls_lines(_describe(input))
    for line in lines:
        click.echo(line)


@cli.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--dtype", help="Element type of a raw input file.")
@click.option(
    "--teacher-forced/--step",
    default=True,
    help="One pass per window (fast) or the coder's step loop.",
)
@click.option(
    "--compress", "also_compress", is_flag=True, help="Also compress, and print both sizes."
)
@pipeline_options
def estimate(
    input: str, dtype: str | None, teacher_forced: bool, also_compress: bool, **kw: Any
) -> None:
    """Ideal code length under a prior (what the paper's tables measure), without a stream."""
    from lmgc_core.files.readers import load_arrays

    pipeline = build_pipeline(**kw)
    notes: list[str] = []
    with open_input(input) as (src, size, name):
        arrays = load_arrays(src, size, name, dtype, notes=notes)
    _warn(notes)  # as compress does: --dtype on a .npy estimates its bytes as raw values
    if not arrays:  # printed nothing, exit 0 (a zip with no .npy members, an lmgc archive)
        raise ConfigError(f"{name} holds no arrays to estimate")
    for key, arr in arrays.items():
        est = pipeline.estimate(arr, teacher_forced=teacher_forced)
        line = (
            f"{key or name}: {est['original_bytes']} bytes, ideal {est['ideal_bytes']:.1f} bytes "
            f"({est['rate_percent']:.2f}%), {est['bits_per_symbol']:.3f} bits/symbol "
            f"[{est['method']}]"
        )
        if also_compress:
            blob = pipeline.compress(arr)
            line += f"; real stream {len(blob)} bytes ({100 * len(blob) / max(arr.nbytes, 1):.2f}%)"
        click.echo(safe(line))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """List serializers, priors, coders and stages with their source and availability."""
    _add_plugin_commands()  # a plugin whose commands fail to register is listed as broken
    regs = sorted(registry.registrations().values(), key=lambda r: (r.kind, r.name))
    broken = registry.BROKEN
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "kind": r.kind,
                        "name": r.name,
                        "plugin": r.plugin,
                        "available": r.available,
                        "missing": list(r.missing),
                        "install_hint": r.install_hint,
                        "description": r.description,
                        "broken": r.broken or None,
                    }
                    for r in regs
                ]
                + [{"kind": "plugin", "plugin": p, "broken": e} for p, e in broken.items()],
                indent=2,
            )
        )
        return
    for r in regs:
        status = "ok" if r.available else f"unavailable: needs {', '.join(r.missing)}"
        if r.missing and r.install_hint:
            status += f" ({r.install_hint})"
        if r.broken:
            status = f"broken: {r.broken}"
        click.echo(safe(f"{r.kind:<10} {r.name:<14} {r.plugin:<28} {status}"))
        if r.description:
            click.echo(safe(f"{'':<10} {'':<14} {r.description}"))
    for plugin, error in broken.items():
        click.echo(safe(f"{'plugin':<10} {'':<14} {plugin:<28} broken: {error}"))


def _add_plugin_commands() -> None:
    cli.add_plugin_commands()  # type: ignore[attr-defined]  # (the group is a _Group)


def main() -> None:
    interrupts.install()  # SIGTERM unwinds like Ctrl-C (exit 143), neither gets lost
    cli(prog_name="lmgc")  # plugins' commands: when asked for (_Group.get_command)


if __name__ == "__main__":
    main()
