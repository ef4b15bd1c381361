"""What every component kind is checked for: registration, configuration, and round trips through
every front end (Pipeline, ``lmgc_core.decompress``, the numcodecs codec, the CLI, a fresh
process)."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from lmgc_core.components import registry
from lmgc_core.components.spec import ComponentSpec, spec_dict
from lmgc_core.util.bytes_layout import same_bits
from lmgc_core.util.dtypes import dtype_name
from lmgc_core.util.errors import LMGCError, PluginError


class ConformanceError(AssertionError):
    """A component breaks a rule of the plugin contract; the message names it and the rule."""


@dataclass
class Subject:
    """The component under test, as built by the registry from its spec."""

    kind: str
    spec: dict[str, Any]
    component: Any
    registration: registry.Registration
    passed: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name!r} ({self.registration.plugin})"

    def fail(self, rule: str, detail: str) -> NoReturn:
        raise ConformanceError(f"{self.label}: {rule}: {detail}")

    def ok(self, rule: str) -> None:
        self.passed.append(rule)

    def rebuild(self, options: Mapping[str, Any] | None = None) -> Any:
        opts = self.options if options is None else dict(options)
        return registry.build(self.kind, self.name, opts)

    @property
    def options(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.items() if k != "name"}


def json_copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def subject(kind: str, thing: Any) -> Subject:
    """Accepts a registered name, a ``{"name": ..., **options}`` spec or a built component."""
    if isinstance(thing, str | Mapping):
        spec: dict[str, Any] = spec_dict(thing)
    else:
        name = getattr(type(thing), "name", "")
        if not isinstance(name, str) or not name:
            raise ConformanceError(
                f"{kind} {type(thing).__name__}: `name` is not set on the class: streams record "
                "the class's name, so set it to the name you register"
            )
        spec = ComponentSpec.of(thing).to_dict()
    name = spec.get("name")
    reg = registry.registrations().get((kind, name))
    if reg is None:
        raise ConformanceError(
            f"{kind} {name!r} is not registered: install its package (it must be listed under "
            "the 'lmgc' entry-point group), or registry.add_plugin(module) in a test; "
            f"registered {kind}s: {', '.join(registry.names(kind))}"
        )
    sub = Subject(kind, spec, None, reg)
    try:
        sub.component = sub.rebuild()
    except PluginError as exc:
        sub.fail("registered name", str(exc))
    if not isinstance(thing, str | Mapping) and type(sub.component) is not type(thing):
        sub.fail(
            "registered factory",
            f"builds a {type(sub.component).__name__}, not the {type(thing).__name__} given",
        )
    sub.ok("registered name equals the class's name")
    return sub


def _left_out(comp: Any, option: str, implied: Mapping[str, Any]) -> bool:
    """An option may be missing from get_config() only at the value its absence means."""
    return option in implied and getattr(comp, option, object()) == implied[option]


def check_config(sub: Subject) -> None:
    """``get_config`` is JSON, has every constructor option, and rebuilds the same component."""
    comp = sub.component
    config = comp.get_config()
    if not isinstance(config, dict):
        sub.fail("get_config", f"returns {type(config).__name__}, not a dict")
    if "name" in config:
        sub.fail("get_config", "must not hold 'name' (the pipeline adds it)")
    try:
        again = json_copy(config)
    except (TypeError, ValueError) as exc:
        sub.fail("get_config", f"is not JSON-serialisable: {exc}")
    if again != config:
        sub.fail(
            "get_config",
            f"does not survive JSON ({config!r} comes back as {again!r}): use lists, not "
            "tuples, and str keys",
        )
    try:
        params = list(inspect.signature(type(comp)).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: nothing to compare
        params = []
    options = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    # ``recorded_defaults``: options a component leaves out of get_config() at a value their
    # absence stands for in every stream ever written (so old headers stay byte-identical).
    implied = getattr(type(comp), "recorded_defaults", {})
    lost = [o for o in options if o not in config and not _left_out(comp, o, implied)]
    if lost:
        sub.fail(
            "get_config",
            f"constructor option(s) {lost} are missing from get_config() {config}: a stream "
            "records only get_config(), so decoding would rebuild the component with defaults",
        )
    with registry.recorded():  # as a stream header's config is rebuilt
        rebuilt = sub.rebuild(again)
    if rebuilt.get_config() != config:
        sub.fail(
            "config replay",
            f"{type(comp).__name__}(**get_config()) has get_config() {rebuilt.get_config()!r}, "
            f"not {config!r}",
        )
    sub.ok("get_config is JSON, complete, and replays")


def class_sets(cls: type, attr: str, base: type) -> bool:
    """True when ``attr`` is defined by ``cls`` or a base other than the interface ``base``."""
    return any(attr in vars(c) for c in cls.__mro__ if c is not base and issubclass(c, base))


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _describe(arr: np.ndarray) -> str:
    return f"{dtype_name(arr.dtype)} {tuple(arr.shape)}"


def roundtrip_everywhere(
    sub: Subject,
    config: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    cli: bool = True,
    codec: bool = True,
    fresh_process: bool = True,
    may_refuse: bool = False,
    fresh_job: Mapping[str, Any] | None = None,
    light: bool = False,
) -> dict[str, Any]:
    """Compress every array and decode it through each front end, and compare the streams
    with a fresh process's; returns that process's answer (``{}`` without one).

    ``may_refuse``: an array the component cannot handle may raise an :class:`LMGCError` (a
    stage refusing NaN); any other exception is a defect. ``fresh_job``: more work for the
    fresh process (one process per check: an LM loads its model once). ``light``: arrays after
    the first get only the header-rebuilt decode and the fresh process (slow LM priors)."""
    from lmgc_core.coding.pipeline import Pipeline, decompress

    pipeline = Pipeline.from_config(dict(config))
    digests: dict[str, str] = {}
    for name, arr in arrays.items():
        try:
            blob = pipeline.compress(arr)
        except PluginError as exc:  # not a refusal: compress found the component at fault
            sub.fail("compress", f"{name} ({_describe(arr)}): {exc}")
        except LMGCError:
            if may_refuse:
                continue
            raise
        except Exception as exc:
            sub.fail("compress", f"{name} ({_describe(arr)}) raised {type(exc).__name__}: {exc}")
        expected = pipeline.reconstruct(arr)
        thorough = not digests or not light
        decoders = [
            ("lmgc_core.decompress (rebuilt from the header)", lambda b=blob: decompress(b))
        ]
        if thorough:
            decoders.append(("Pipeline.decompress", lambda b=blob: pipeline.decompress(b)))
        for how, out in decoders:
            try:
                got = out()
            except LMGCError as exc:
                sub.fail(f"round trip via {how}", f"{name} ({_describe(arr)}): {exc}")
            if not same_bits(got, expected):
                sub.fail(f"round trip via {how}", f"{name} ({_describe(arr)}) is not bit-exact")
        if not digests:  # the first array only: the fresh process checks every one again
            if pipeline.compress(arr) != blob:
                sub.fail("determinism", f"compressing {name} twice gives different streams")
            if Pipeline.from_config(dict(config)).compress(arr) != blob:
                sub.fail("determinism", f"a second pipeline compresses {name} differently")
        if codec and arr.ndim > 0 and thorough:
            _codec_roundtrip(sub, config, name, arr, expected, blob)
        digests[name] = _digest(blob)
    sub.ok("round trips: Pipeline, lmgc_core.decompress" + (", numcodecs" if codec else ""))
    if cli:
        _cli_roundtrip(sub, config, next(iter(arrays.values())))
    if not fresh_process:
        return {}
    try:
        fresh = run_fresh(config, {k: arrays[k] for k in digests}, **(fresh_job or {}))
    except ConformanceError as exc:
        hint = ""
        if not sub.registration.distribution:  # added with registry.add_plugin
            hint = (
                "; a plugin added at run time is imported there again by its module's name: "
                "define it in an importable module, or pass fresh_process=False"
            )
        sub.fail("fresh process", f"{exc}{hint}")
    for name, digest in digests.items():
        if fresh["streams"].get(name) != digest:
            sub.fail("determinism", f"a fresh process compresses {name} to another stream")
    sub.ok("same streams in a fresh process")
    return fresh


def _codec_roundtrip(
    sub: Subject,
    config: Mapping[str, Any],
    name: str,
    arr: np.ndarray,
    expected: np.ndarray,
    blob: bytes,
) -> None:
    import numcodecs

    from lmgc_core.codecs.numcodecs_codec import LMGC

    # the codec a user makes from the config, read back from the metadata it writes
    codec = numcodecs.get_codec(json_copy(LMGC(**dict(config)).get_config()))
    try:
        encoded = codec.encode(arr)
        got = codec.decode(encoded)
    except LMGCError as exc:
        sub.fail("numcodecs round trip", f"{name}: {exc}")
    if not same_bits(np.asarray(got).reshape(expected.shape), expected):
        sub.fail("numcodecs round trip", f"{name} ({_describe(arr)}) is not bit-exact")
    if bytes(encoded) != blob:
        sub.fail("numcodecs round trip", f"the codec's stream of {name} differs from Pipeline's")


def _cli_roundtrip(sub: Subject, config: Mapping[str, Any], arr: np.ndarray) -> None:
    from click.testing import CliRunner

    from lmgc_core.cli.commands import cli
    from lmgc_core.coding.pipeline import Pipeline

    expected = Pipeline.from_config(dict(config)).reconstruct(arr)
    with tempfile.TemporaryDirectory() as tmp:
        src, packed, back, cfg = (Path(tmp) / n for n in ("a.npy", "a.lmgc", "b.npy", "c.json"))
        np.save(src, arr)
        cfg.write_text(json.dumps(dict(config)))
        runner = CliRunner()
        for args in (
            ["compress", str(src), "-o", str(packed), "--config", str(cfg)],
            ["decompress", str(packed), "-o", str(back)],
        ):
            result = runner.invoke(cli, args)
            if result.exit_code != 0:
                sub.fail(
                    "CLI round trip",
                    f"lmgc {args[0]} exited {result.exit_code}: "
                    f"{result.output.strip() or result.exception!r}",
                )
        if not same_bits(np.load(back), expected):
            sub.fail("CLI round trip", f"{_describe(arr)} is not bit-exact")
    sub.ok("CLI round trip")


# ------------------------------------------------------------------------- fresh process


def run_fresh(config: Mapping[str, Any], arrays: Mapping[str, np.ndarray], **job: Any) -> Any:
    """Run :mod:`lmgc_core.testing._fresh` in a new interpreter (same ``sys.path``, plugins
    added at run time re-added) and return its JSON answer."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, arr in arrays.items():
            path = Path(tmp) / f"{len(files)}.bin"
            path.write_bytes(np.ascontiguousarray(arr).tobytes())
            files[name] = [str(path), dtype_name(arr.dtype), list(arr.shape)]
        spec = Path(tmp) / "job.json"
        spec.write_text(
            json.dumps(
                {
                    "config": json_copy(dict(config)),
                    "arrays": files,
                    "runtime_modules": [s.module for s in registry.runtime_plugins() if s.module],
                    **job,
                }
            )
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.run(
            [sys.executable, "-m", "lmgc_core.testing._fresh", str(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise ConformanceError(f"it failed: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
