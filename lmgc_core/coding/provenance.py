"""Which plugin distributions (and versions) made a stream, and the checks that use it.

A prior's fingerprint is written by hand, so it can miss what changes its numbers: an option
left out of ``get_config``, or a code change shipped without a version bump. Three helpers,
called from :class:`~lmgc_core.coding.pipeline.Pipeline`, turn those mistakes into errors that
point at
the component:

* :func:`made_by` - the header's ``made_by`` record: ``"<distribution> <version>"`` of the plugin
  behind each component, filled in from the registry (no plugin writes it);
* :func:`check_replay` - at compress time, the configuration must rebuild the same components
  (same config after a JSON round trip, same prior fingerprint), since that is all decoding has;
* :func:`explain_decode_failures` - a decode that fails although the container is intact names
  the components and versions that made the stream and those decoding it.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from lmgc_core.components import registry
from lmgc_core.components.spec import spec_name
from lmgc_core.stream import container
from lmgc_core.util.errors import (
    ConfigError,
    LMGCError,
    MismatchError,
    OutOfMemoryError,
    PluginError,
    StreamError,
    TruncatedStreamError,
)

ROLES = ("serializer", "prior", "coder")


def _label(kind: str, component: Any) -> str:
    reg = registry.registration_of(kind, component)
    return reg.plugin if reg is not None else "not registered"


def made_by(pipeline: Any) -> str | dict[str, Any]:
    """``{"serializer": "lmgc 0.1.0", "prior": "...", "coder": "...", "stages": [...]}``, or
    just ``"lmgc 0.1.0"`` when one distribution made every component (it keeps small chunks'
    headers small)."""
    record: dict[str, Any] = {role: _label(role, getattr(pipeline, role)) for role in ROLES}
    record["stages"] = [_label("stage", s) for s in pipeline.stages]
    labels = {record[role] for role in ROLES} | set(record["stages"])
    return labels.pop() if len(labels) == 1 else record


def _record(made: Any, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The per-role form of a ``made_by`` value (``None``: not recorded)."""
    if isinstance(made, str):
        return {**dict.fromkeys(ROLES, made), "stages": [made] * len(config.get("stages") or [])}
    return dict(made) if isinstance(made, Mapping) else None


# -------------------------------------------------------------------------- compress time

_REPLAYED: weakref.WeakSet[Any] = weakref.WeakSet()


def _json_copy(config: Mapping[str, Any]) -> Any:
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the pipeline config is not JSON (a get_config()): {exc}") from None


def _config_diffs(mine: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> list[str]:
    diffs = []
    for key in ("stages", *ROLES, "window", "batch"):
        if mine.get(key) != rebuilt.get(key):
            diffs.append(f"{key}: config has {mine.get(key)!r}, rebuilt {rebuilt.get(key)!r}")
    return diffs


def check_replay(pipeline: Any) -> None:
    """Refuse to compress with components that their own config does not rebuild exactly.

    Decoding rebuilds everything from the JSON config in the header; a difference found here
    would otherwise surface only as an undecodable stream. Checked once per pipeline object;
    skipped for components built by hand from unregistered classes (nothing could rebuild them
    from a config anyway, only this very pipeline object can decode their streams)."""
    if pipeline in _REPLAYED:
        return
    components = [(role, getattr(pipeline, role)) for role in ROLES]
    components += [("stage", s) for s in pipeline.stages]
    if any(registry.registration_of(kind, c) is None for kind, c in components):
        return
    config = pipeline.recorded_config()
    recorded = _json_copy(config)
    try:
        with registry.recorded():  # as decoding rebuilds it from the header
            rebuilt = type(pipeline).from_config(recorded)
    except PluginError:  # a part built by hand inside a registered one (a mixture's expert)
        return
    diffs = _config_diffs(recorded, rebuilt.recorded_config())
    if diffs:
        raise ConfigError(
            "the pipeline does not survive a JSON round trip of its config ("
            + "; ".join(diffs)
            + "): get_config() must return JSON types that the factory accepts unchanged"
        )
    mine, again = pipeline.prior.fingerprint(), rebuilt.prior.fingerprint()
    if mine != again:
        keys = sorted(k for k in set(mine) | set(again) if mine.get(k) != again.get(k))
        detail = "; ".join(f"{k!r}: {mine.get(k)!r} here, {again.get(k)!r} rebuilt" for k in keys)
        raise ConfigError(
            f"prior {pipeline.prior.name!r} ({_label('prior', pipeline.prior)}) rebuilt from its "
            f"get_config() {recorded['prior']!r} has a different fingerprint ({detail}): the "
            f"option behind {', '.join(map(repr, keys))} is missing from get_config(), so the "
            "stream could not be decoded"
        )
    _check_stages_replay(pipeline, rebuilt)
    _REPLAYED.add(pipeline)


STAGE_PROBE_VALUES = 256
"""Values of the probe :func:`_check_stages_replay` runs through the stages."""


def _check_stages_replay(pipeline: Any, rebuilt: Any) -> None:
    """Stages have no fingerprint: an option missing from a stage's ``get_config()`` shows
    only as another reconstruction. So a probe (float32 values of several magnitudes and
    signs) goes forward through this pipeline's stages, its states through JSON as in a
    header, and back through both pipelines' stages: they must rebuild the same bytes, or the
    streams would fail their checksum when decoded."""
    if not pipeline.stages:
        return
    import numpy as np

    probe = np.geomspace(1e-4, 1e3, STAGE_PROBE_VALUES, dtype=np.float32)
    probe[::2] *= -1
    try:
        parts, states = pipeline._forward(probe)
        states = _json_copy({"states": states})["states"]
        mine = pipeline._inverse(dict(parts), states, probe.dtype, probe.shape)
    except (LMGCError, ValueError, TypeError):  # the stages refuse this probe (or fail on
        return  # it: compress names them when they fail on the data): nothing to compare
    try:
        again = rebuilt._inverse(dict(parts), states, probe.dtype, probe.shape)
    except LMGCError:
        again = None
    if again is None or again.tobytes() != mine.tobytes():
        names = ", ".join(repr(s.name) for s in pipeline.stages)
        raise ConfigError(
            f"the stages ({names}) rebuilt from their get_config() "
            f"{_json_copy(pipeline.recorded_config())['stages']!r} reconstruct "
            "other values than these: an option is missing from a stage's get_config(), so "
            "the stream could not be decoded"
        )


# -------------------------------------------------------------------------- decode time


def _describe(config: Mapping[str, Any], record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(component, "dist version"), ...]`` for a config and a ``made_by`` record."""

    def name(spec: Any) -> str:
        return str(spec_name(spec) or "?") if isinstance(spec, Mapping) else str(spec)

    out = [(f"{role} {name(config.get(role))!r}", str(record.get(role, "?"))) for role in ROLES]
    stages = config.get("stages") or []
    labels = record.get("stages") or []
    for i, spec in enumerate(stages):
        out.append((f"stage {name(spec)!r}", str(labels[i]) if i < len(labels) else "?"))
    return out


def explain(header: Mapping[str, Any], pipeline: Any, named: bool = False) -> str:
    """Who made the stream, who decodes it, and what differs (one sentence for an error).
    ``named``: the error names its cause already (a fingerprint's differing entry, such as
    another model's SHA-256): no guess at a cause is added when the versions are the same."""
    config = header.get("pipeline") if isinstance(header.get("pipeline"), Mapping) else {}
    record = _record(header.get("made_by"), config)
    mine_config = pipeline.recorded_config()
    theirs = _describe(config, record or {})
    mine = _describe(mine_config, _record(made_by(pipeline), mine_config) or {})
    made = ", ".join(f"{c} ({v})" for c, v in theirs)
    if record is None:
        made = ", ".join(c for c, _ in theirs) + " (plugin versions not recorded)"
    using = ", ".join(f"{c} ({v})" for c, v in mine)
    changed = [
        f"{c}: {v} made it, {w} decodes it"
        for (c, v), (d, w) in zip(theirs, mine, strict=False)
        if c == d and v != w and record is not None
    ]
    text = f"the stream was made with {made}; this decoder uses {using}"
    if changed and named:  # the error says what differs: the versions only explain it
        text += "; versions differ (" + "; ".join(changed) + "): decode with the version that "
        text += "made the stream"
    elif changed:
        text += (
            "; versions differ (" + "; ".join(changed) + "): a plugin's code changed its numbers "
            "without a change of fingerprint; decode with the version that made the stream (and, "
            "as the plugin's author, put a version number in fingerprint())"
        )
    elif not named and _numpy_bound(header):
        text += (
            "; an adaptive stream of version 2 took its scores through numpy's log and exp, "
            "and decodes only where they give the encoder's last bits (numpy 2 on x86-64, not "
            "numpy 1.x): decode it with numpy 2 (docs/compatibility.md)"
        )
    elif not named:
        text += (
            "; same versions: a component is not deterministic (check it with "
            "lmgc_core.testing) or the stream was altered before it was written"
        )
    return text


def _numpy_bound(header: Mapping[str, Any]) -> bool:
    """The one legacy stream whose decoding depends on numpy's float maths (see
    docs/compatibility.md): the ``adaptive`` prior's version 2."""
    prior = header.get("prior")
    return (
        isinstance(prior, Mapping)
        and prior.get("prior") == "adaptive"
        and (prior.get("version") == 2)
    )


def _intact_header(blob: Any) -> dict[str, Any] | None:
    """The header when the container (header and block CRCs) is intact, else ``None``: a
    damaged container is corruption, not a component's fault."""
    try:
        return container.unpack(bytes(blob)).header
    except (StreamError, TypeError, ValueError):
        return None


def explain_decode_failures(decompress: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for ``Pipeline.decompress``: failures of an intact stream name the plugins."""

    @functools.wraps(decompress)
    def wrapper(self: Any, blob: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return decompress(self, blob, *args, **kwargs)
        except (StreamError, MismatchError) as exc:
            if isinstance(exc, TruncatedStreamError | OutOfMemoryError):
                raise
            header = _intact_header(blob)
            if header is None:
                raise
            try:
                named = isinstance(exc, MismatchError)  # it says what differs
                better = type(exc)(f"{exc}; {explain(header, self, named)}")
            except Exception:  # an exception type with another signature: keep the original
                raise exc from None
            raise better.with_traceback(exc.__traceback__) from None

    return wrapper
