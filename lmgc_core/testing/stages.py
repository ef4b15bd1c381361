"""``check_stage``: a stage must rebuild exactly, whatever the values and the byte order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lmgc_core.coding.pipeline import Pipeline
from lmgc_core.components.interfaces import Stage
from lmgc_core.testing._common import (
    Subject,
    check_config,
    json_copy,
    roundtrip_everywhere,
    same_bits,
    subject,
)
from lmgc_core.testing.samples import in_byte_order, sample_arrays
from lmgc_core.util.dtypes import dtype_name
from lmgc_core.util.errors import ConfigError, LMGCError


def check_stage(
    stage: Any,
    *,
    config: Mapping[str, Any] | None = None,
    fresh_process: bool = True,
    cli: bool = True,
    codec: bool = True,
) -> list[str]:
    """Check a stage (a registered name, a ``{"name": ..., **options}`` spec or an instance).

    The stage may refuse an input it cannot handle (NaN for a quantizer, say) with an
    :class:`~lmgc_core.util.errors.LMGCError`, but must accept float32 gradients. ``config``: other
    pipeline keys (the prior defaults to ``adaptive``). Returns the rules that passed; raises
    :class:`ConformanceError` on the first that fails."""
    sub = subject("stage", stage)
    if not isinstance(sub.component, Stage):
        sub.fail("interface", f"{type(sub.component).__name__} is not a lmgc_core Stage")
    check_config(sub)
    arrays = sample_arrays()
    for name, arr in arrays.items():
        _check_forward(sub, name, arr, must_accept=name == "gradients")
    sub.ok("forward/inverse contract (parts, JSON state, determinism, input untouched)")
    _check_byte_orders(sub, arrays)
    cfg = {"prior": "adaptive", "serializer": "hex", **(config or {})}
    cfg["stages"] = [*cfg.get("stages", []), sub.spec]
    roundtrip_everywhere(
        sub, cfg, arrays, cli=cli, codec=codec, fresh_process=fresh_process, may_refuse=True
    )
    if cli:
        _cli_stage_option(sub, cfg, arrays["gradients"])
    return sub.passed


def _forward(sub: Subject, stage: Any, arr: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
    try:
        return stage.forward({"data": arr.reshape(-1)})
    except LMGCError:
        raise
    except Exception as exc:
        sub.fail(
            "forward",
            f"{dtype_name(arr.dtype)} input raised {type(exc).__name__}: {exc}; refuse inputs "
            "you cannot handle with an LMGCError and a clear message",
        )


def _inverse(sub: Subject, stage: Any, parts: dict[str, np.ndarray], state: Any, name: str) -> Any:
    """``stage.inverse`` of a copy of ``parts``; any exception is the kit's failure (an
    LMGCError too: the stage's own forward output must invert)."""
    try:
        return stage.inverse({k: v.copy() for k, v in parts.items()}, state)
    except Exception as exc:
        sub.fail(
            "inverse",
            f"of {name} raised {type(exc).__name__}: {exc}; it must rebuild what forward gave",
        )


def _check_forward(sub: Subject, name: str, arr: np.ndarray, must_accept: bool) -> None:
    stage = sub.component
    before = arr.copy()
    try:
        parts, state = _forward(sub, stage, arr)
    except LMGCError as exc:
        if must_accept:
            sub.fail("forward", f"refuses float32 gradients: {exc}")
        return
    if not same_bits(arr, before):
        sub.fail("forward", f"modified its input ({name})")
    if not isinstance(parts, dict) or not all(isinstance(k, str) for k in parts):
        sub.fail("forward", f"must return a dict of named parts, not {type(parts).__name__}")
    for part, values in parts.items():
        if not isinstance(values, np.ndarray) or values.ndim != 1:
            sub.fail("forward", f"part {part!r} of {name} is not a 1-D ndarray")
        try:
            dtype_name(values.dtype)
        except ConfigError:
            sub.fail("forward", f"part {part!r} has dtype {values.dtype}, which cannot be coded")
    try:
        state_json = json_copy(state)
    except (TypeError, ValueError) as exc:
        sub.fail("state", f"of {name} is not JSON-serialisable: {exc}")
    if state_json != state:
        sub.fail("state", f"of {name} does not survive JSON: {state!r}")
    again, state2 = stage.forward({"data": arr.reshape(-1)})
    other, state3 = sub.rebuild().forward({"data": arr.reshape(-1)})
    for label, (p, s) in (("a second call", (again, state2)), ("a rebuilt stage", (other, state3))):
        if (
            s != state
            or p.keys() != parts.keys()
            or not all(same_bits(p[k], parts[k]) for k in parts)
        ):
            sub.fail("determinism", f"forward of {name} differs in {label}")
    out = _inverse(sub, stage, parts, state_json, name)
    ref = _inverse(sub, stage, parts, state, name)
    if not isinstance(out, dict) or "data" not in out:
        sub.fail("inverse", f"must return the parts it was given back, with 'data', for {name}")
    if not same_bits(np.asarray(out["data"]), np.asarray(ref["data"])):
        sub.fail("state", f"inverse of {name} differs after the state's JSON round trip")
    if stage.lossless:
        rebuilt = np.asarray(out["data"])
        if rebuilt.size != arr.size:
            sub.fail("lossless", f"claims lossless = True but rebuilds {rebuilt.size} values of "
                     f"{name}'s {arr.size}")  # fmt: skip
        rebuilt = rebuilt.astype(arr.dtype, copy=False).reshape(arr.shape)
        if not same_bits(rebuilt, arr):
            sub.fail("lossless", f"claims lossless = True but does not rebuild {name} exactly")


def _native_bits(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")).tobytes()


def _check_byte_orders(sub: Subject, arrays: Mapping[str, np.ndarray]) -> None:
    """Stages get the caller's byte order: the values, not the bytes, must decide the output,
    and decoding must hand the caller's dtype back."""
    pipeline = Pipeline.from_config({"prior": "uniform", "stages": [sub.spec]})
    for name, arr in arrays.items():
        if arr.dtype.kind != "f" or arr.dtype.itemsize == 1:
            continue
        native = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        swapped = in_byte_order(native, arr.dtype.newbyteorder("S" if arr.dtype.isnative else "="))
        results, forwards = [], []
        for x in (native, swapped):
            try:
                results.append(pipeline.reconstruct(x))
                forwards.append(sub.component.forward({"data": x.reshape(-1)}))
            except LMGCError as exc:
                results.append(exc)
        a, b = results
        if isinstance(a, Exception) != isinstance(b, Exception):
            sub.fail("byte order", f"{name} is refused in one byte order only")
        if isinstance(a, Exception):
            continue
        (parts_a, state_a), (parts_b, state_b) = forwards
        if (
            state_a != state_b
            or parts_a.keys() != parts_b.keys()
            or any(_native_bits(parts_a[k]) != _native_bits(parts_b[k]) for k in parts_a)
        ):
            sub.fail(
                "byte order",
                f"forward of {name} gives other parts for {native.dtype.str} and "
                f"{swapped.dtype.str} input: stages receive the caller's byte order; read values, "
                "not bytes (use lmgc_core.util.bytes_layout.native)",
            )
        if b.dtype != swapped.dtype:
            sub.fail("byte order", f"decoding {swapped.dtype.str} input returns {b.dtype.str}")
        if _native_bits(a) != _native_bits(b):
            sub.fail(
                "byte order",
                f"{name} rebuilds differently from {native.dtype.str} and {swapped.dtype.str} "
                "input: stages receive the caller's byte order; read values, not bytes (see "
                "lmgc_core.util.bytes_layout.native)",
            )
    sub.ok("both byte orders give the same values")


def _cli_stage_option(sub: Subject, cfg: Mapping[str, Any], arr: np.ndarray) -> None:
    """``lmgc compress --stage '{...}'`` must make the same stream as the config file."""
    import json
    import tempfile
    from pathlib import Path

    from click.testing import CliRunner

    from lmgc_core.cli.commands import cli

    with tempfile.TemporaryDirectory() as tmp:
        src, a, b = (Path(tmp) / n for n in ("x.npy", "a.lmgc", "b.lmgc"))
        np.save(src, arr)
        base = {k: v for k, v in cfg.items() if k != "stages"}
        (Path(tmp) / "base.json").write_text(json.dumps(base))
        (Path(tmp) / "full.json").write_text(json.dumps(cfg))
        stage_args = [a for s in cfg["stages"] for a in ("--stage", json.dumps(s))]
        runner = CliRunner()
        for out, extra in (
            (a, ["--config", str(Path(tmp) / "full.json")]),
            (b, ["--config", str(Path(tmp) / "base.json"), *stage_args]),
        ):
            result = runner.invoke(cli, ["compress", str(src), "-o", str(out), *extra])
            if result.exit_code != 0:
                sub.fail("CLI --stage", result.output.strip() or repr(result.exception))
        if a.read_bytes() != b.read_bytes():
            sub.fail("CLI --stage", "--stage JSON and the config file give different streams")
    sub.ok("CLI --stage")
