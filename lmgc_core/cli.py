"""The ``lmgc`` command line: compress, decompress, info, estimate, plugins (+ plugin commands).

Every expected failure prints one ``error: ...`` line and exits with status 1 (2 for usage).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from . import archive, registry
from .errors import ConfigError, LMGCError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"options are KEY=VALUE, not {pair!r}")
        out[key] = _parse_value(value)
    return out


def _stage_spec(text: str) -> dict[str, Any]:
    """``--stage NAME[:KEY=VALUE,...]`` or a JSON object ``{"name": NAME, ...}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--stage {text!r} is not valid JSON: {exc}") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ConfigError(f"--stage {text!r} must be a JSON object with a 'name'")
        return spec
    name, _, opts = text.partition(":")
    if not name:
        raise ConfigError(f"--stage is NAME[:KEY=VALUE,...] or a JSON object, not {text!r}")
    return {"name": name, **_options(tuple(o for o in opts.split(",") if o))}


def _pipeline_config(
    config: str | None,
    prior: str | None,
    serializer: str | None,
    coder: str | None,
    window: int | None,
    batch: int | None,
    model: str | None,
    prior_opts: tuple[str, ...],
    serializer_opts: tuple[str, ...],
    stages: tuple[str, ...] = (),
) -> dict[str, Any]:
    from .config_file import load_config

    cfg: dict[str, Any] = load_config(config) if config else {}
    if stages:  # appended after the config file's stages, in the order given
        cfg["stages"] = [*(cfg.get("stages") or []), *map(_stage_spec, stages)]
    for key, name, opts in (
        ("prior", prior, prior_opts),
        ("serializer", serializer, serializer_opts),
        ("coder", coder, ()),
    ):
        current = cfg.get(key)
        current = {"name": current} if isinstance(current, str) else dict(current or {})
        if name:
            current = {"name": name} if current.get("name") != name else current
        current.update(_options(opts))
        if key == "prior" and model:
            current["model"] = model
        if current:
            cfg[key] = current
    if window is not None:
        cfg["window"] = window
    if batch is not None:
        cfg["batch"] = batch
    return cfg


@contextmanager
def _progress(total: int, label: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="sym", unit_scale=True, disable=None, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _Group(click.Group):
    """Turns lmgc errors (and unreadable files) into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LMGCError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        except MemoryError:
            _fail("out of memory")


@click.group(cls=_Group)
@click.version_option(package_name="lmgc")
def cli() -> None:
    """Lossless compression of gradients and weights with language models as priors."""


def _pipeline_options(f: Callable) -> Callable:
    opts = [
        click.option(
            "--config",
            "config",
            type=click.Path(dir_okay=False),
            help="Pipeline config (YAML/TOML/JSON).",
        ),
        click.option(
            "--prior", help="Prior plugin name (adaptive, uniform, transformers, llamacpp...)."
        ),
        click.option("--serializer", help="Serializer plugin name (hex, iso)."),
        click.option("--coder", help="Entropy coder plugin name (range)."),
        click.option("--window", type=int, help="Tokens per window, BOS included (default 2048)."),
        click.option("--batch", type=int, help="Windows per batch (default: the prior's)."),
        click.option("--model", help="Model file or folder for an LM prior."),
        click.option(
            "--prior-option",
            "-P",
            "prior_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Prior option (repeatable).",
        ),
        click.option(
            "--serializer-option",
            "-S",
            "serializer_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Serializer option (repeatable).",
        ),
        click.option(
            "--stage",
            "stages",
            multiple=True,
            metavar="NAME[:K=V,...]|JSON",
            help='Append a stage, e.g. quantize:bits=8 or \'{"name": "quantize", '
            "\"bits\": 8}' (repeatable; after the config file's stages).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


_JOBS = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=0),
    default=0,
    show_default="0 = all cores",
    help="Threads coding independent blocks / archive members (same bytes for any N).",
)


def _read_input(path: str, dtype: str | None):
    from .io import load_arrays

    return load_arrays(Path(path), dtype)


@cli.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: INPUT.lmgc")
@click.option("--dtype", help="Element type of a raw input file (e.g. float32).")
@_JOBS
@_pipeline_options
def compress(input: str, output: str | None, dtype: str | None, jobs: int, **kw: Any) -> None:
    """Compress a .npy, .npz, .safetensors or raw file."""
    from .parallel import map_ordered, split_jobs
    from .pipeline import Pipeline

    pipeline = Pipeline.from_config(_pipeline_config(**kw))
    data = _read_input(input, dtype)
    arrays = data if isinstance(data, dict) else {"": data}
    total = sum(pipeline.serializer.n_symbols(a.nbytes) for a in arrays.values())
    outer, inner = split_jobs(jobs, len(arrays), pipeline.prior.thread_safe)
    with _progress(total, "compress") as update:
        blobs = map_ordered(
            lambda arr: pipeline.compress(arr, progress=update, jobs=inner), arrays.values(), outer
        )
    streams = dict(zip(arrays, blobs, strict=True))
    blob = streams[""] if not isinstance(data, dict) else archive.pack(streams)
    out = Path(output or input + ".lmgc")
    out.write_bytes(blob)
    original = sum(a.nbytes for a in arrays.values())
    rate = 100 * len(blob) / original if original else 0.0
    click.echo(f"{input}: {original} -> {len(blob)} bytes ({rate:.2f}%) -> {out}")


def _decode(
    blob: bytes, force: bool, model: str | None, update: Callable[[int], None], jobs: int = 1
):
    from .pipeline import decompress as decode

    return decode(
        blob,
        force=force,
        prior_options={"model": model} if model else None,
        progress=update,
        jobs=jobs,
    )


def _prior_spec(header: dict[str, Any]) -> Any:
    pipeline = header.get("pipeline")
    return pipeline.get("prior") if isinstance(pipeline, dict) else None


def _stream_symbols(blob: bytes) -> int:
    from .pipeline import read_header

    return sum(int(p.get("n_symbols", 0)) for p in read_header(blob).get("parts", []))


@cli.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help=".npy, .npz, .safetensors or raw",
)
@click.option(
    "--force",
    is_flag=True,
    help="Decode even if the prior/model differs (the checksum still guards).",
)
@click.option("--model", help="Model file or folder, if it lives elsewhere on this machine.")
@_JOBS
def decompress(input: str, output: str, force: bool, model: str | None, jobs: int) -> None:
    """Decompress an lmgc stream or archive, verifying its checksum."""
    from .io import save_arrays
    from .parallel import map_ordered, prior_thread_safe, split_jobs
    from .pipeline import read_header

    blob = Path(input).read_bytes()
    streams = archive.unpack(blob) if archive.is_archive(blob) else {"": blob}
    total = sum(_stream_symbols(b) for b in streams.values())
    overrides = {"model": model} if model else None
    concurrent = len(streams) == 1 or all(  # one stream: its pipeline decides for its blocks
        prior_thread_safe(_prior_spec(read_header(b)), overrides) for b in streams.values()
    )
    outer, inner = split_jobs(jobs, len(streams), concurrent)
    with _progress(total, "decompress") as update:
        decoded = map_ordered(
            lambda b: _decode(b, force, model, update, inner), streams.values(), outer
        )
    arrays = dict(zip(streams, decoded, strict=True))
    save_arrays(Path(output), arrays[""] if list(arrays) == [""] else arrays)
    click.echo(f"{input} -> {output} (checksum verified)")


@cli.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the raw headers as JSON.")
def info(input: str, as_json: bool) -> None:
    """Show a stream's header, sizes and compression rate."""
    from .dtypes import parse_dtype
    from .pipeline import read_header

    blob = Path(input).read_bytes()
    streams = archive.unpack(blob) if archive.is_archive(blob) else {"": blob}
    for name, b in streams.items():
        header = read_header(b)
        if as_json:
            click.echo(json.dumps({"name": name, "size": len(b), "header": header}, indent=2))
            continue
        arr = header.get("array", {})
        n = 1
        for d in arr.get("shape", []):
            n *= int(d)
        original = n * parse_dtype(arr.get("dtype", "<f4")).itemsize
        p = header.get("pipeline", {})
        click.echo(f"{name or Path(input).name}:")
        click.echo(f"  array      {arr.get('dtype')} shape {tuple(arr.get('shape', []))}")
        click.echo(
            f"  size       {original} -> {len(b)} bytes ({100 * len(b) / max(original, 1):.2f}%)"
        )
        click.echo(f"  stages     {[s.get('name') for s in p.get('stages', [])]}")
        click.echo(f"  serializer {p.get('serializer')}")
        click.echo(f"  prior      {p.get('prior')}")
        click.echo(
            f"  coder      {p.get('coder')}  window {p.get('window')}  batch {p.get('batch')}"
        )
        click.echo(f"  fingerprint {header.get('prior')}")
        for part in header.get("parts", []):
            click.echo(
                f"  part {part.get('name')}: {part.get('count')} x {part.get('dtype')}, "
                f"{part.get('n_symbols')} symbols, {len(part.get('blocks', []))} blocks"
            )
        click.echo(f"  sha256     {header.get('sha256')}")


@cli.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("--dtype", help="Element type of a raw input file.")
@click.option(
    "--teacher-forced/--step",
    default=True,
    help="One pass per window (fast) or the coder's step loop.",
)
@click.option(
    "--compress", "also_compress", is_flag=True, help="Also compress, and print both sizes."
)
@_pipeline_options
def estimate(
    input: str, dtype: str | None, teacher_forced: bool, also_compress: bool, **kw: Any
) -> None:
    """Ideal code length under a prior (what the paper's tables measure), without a stream."""
    from .pipeline import Pipeline

    pipeline = Pipeline.from_config(_pipeline_config(**kw))
    data = _read_input(input, dtype)
    arrays = data if isinstance(data, dict) else {"": data}
    for name, arr in arrays.items():
        est = pipeline.estimate(arr, teacher_forced=teacher_forced)
        line = (
            f"{name or input}: {est['original_bytes']} bytes, ideal {est['ideal_bytes']:.1f} bytes "
            f"({est['rate_percent']:.2f}%), {est['bits_per_symbol']:.3f} bits/symbol "
            f"[{est['method']}]"
        )
        if also_compress:
            blob = pipeline.compress(arr)
            line += f"; real stream {len(blob)} bytes ({100 * len(blob) / max(arr.nbytes, 1):.2f}%)"
        click.echo(line)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """List serializers, priors, coders and stages with their source and availability."""
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
        click.echo(f"{r.kind:<10} {r.name:<14} {r.plugin:<28} {status}")
        if r.description:
            click.echo(f"{'':<10} {'':<14} {r.description}")
    for plugin, error in broken.items():
        click.echo(f"{'plugin':<10} {'':<14} {plugin:<28} broken: {error}")


def _add_plugin_commands() -> None:
    registry.add_commands(cli)  # a broken plugin is listed by `lmgc plugins`, never fatal


def main() -> None:
    _add_plugin_commands()
    cli(prog_name="lmgc")


if __name__ == "__main__":
    main()
