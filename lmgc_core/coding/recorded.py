"""The pipeline configuration a stream header records, with the decoder's overrides, said once.

Every decoder (the one-shot :func:`lmgc_core.decompress`, the archive's ``StreamDecoder``, the
numcodecs and Zarr codecs) builds the pipeline a header records, perhaps with prior options that
may differ on this machine (``--model``): ``Pipeline.from_config(recorded_config(header, ...))``
inside :func:`header_errors`. The module sits below ``pipeline`` so that it can use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lmgc_core.components.spec import spec_dict
from lmgc_core.util.errors import (
    ConfigError,
    LMGCError,
    MismatchError,
    MissingModelError,
    StreamError,
    UnknownComponentError,
)


def recorded_config(
    header: Mapping[str, Any],
    prior_options: Mapping[str, Any] | None = None,
    default: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of the header's ``pipeline`` with ``prior_options`` merged into its prior's spec
    (a prior recorded by name keeps its name). ``default``: the config to use when the header
    records none (a codec's own); without one, such a header is a :class:`StreamError`."""
    config = header.get("pipeline")
    if not isinstance(config, dict):
        if default is None:
            raise StreamError(
                "stream header has no pipeline configuration (a chunk the numcodecs or Zarr "
                "codec wrote with time_axis has none of its own: decode it with that codec or "
                "lmgc_core.decompress)"
            )
        config = default
    config = dict(config)
    prior = spec_dict(config.get("prior") or {})
    if prior_options and isinstance(prior, dict):  # else from_config explains the bad spec
        config["prior"] = {**prior, **prior_options}
    return config


@contextmanager
def header_errors(header: Mapping[str, Any] | None = None) -> Iterator[None]:
    """A configuration read from a stream that does not build is a bad stream (a
    :class:`StreamError`), not a bad option of the caller's. A component no installed plugin
    registers is said with the distribution ``header`` records as its maker (``made_by``):
    the one to install."""
    try:
        yield
    except MissingModelError as exc:
        if header is None:  # said by the caller that has the header (which names the model)
            raise
        if exc.path not in _recorded_models(header):  # the caller's (prior_options): theirs
            raise StreamError(f"stream header has an invalid pipeline: {exc}") from None
        # the stream is fine: the model it was made with is elsewhere, or gone
        raise MismatchError(_missing_model(header, exc.path)) from None
    except ConfigError as exc:
        raise StreamError(f"stream header has an invalid pipeline: {exc}") from None
    except UnknownComponentError as exc:
        maker = _maker(header, exc.kind, exc.name)
        if not maker:
            raise
        raise UnknownComponentError(
            f"{exc}; the stream was made with {exc.kind} {exc.name!r} from {maker}: install it",
            exc.plugins_failed,
            exc.kind,
            exc.name,
        ) from None


def _recorded_models(header: Mapping[str, Any] | None) -> set[str]:
    """The model paths a header's pipeline names (``model`` options, a mix's experts' too)."""
    found: set[str] = set()
    todo = [header.get("pipeline") if isinstance(header, Mapping) else None]
    while todo:  # a header's text is bounded: so is this walk
        item = todo.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("model"), str):
                found.add(item["model"])
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return found


def _missing_model(header: Mapping[str, Any] | None, path: str) -> str:
    """Which model the stream needs (its recorded path and hash) and how to give its place."""
    prior = header.get("prior") if isinstance(header, Mapping) else None
    sha = prior.get("model_sha256") if isinstance(prior, Mapping) else None
    which = f" (SHA-256 {sha})" if isinstance(sha, str) else ""
    return (
        f"the stream was made with the model {path!r}{which}, which is not on this machine: "
        "give the same model's path with --model PATH (lmgc_core.decompress: prior_options="
        "{'model': PATH}); another model is refused"
    )


def _maker(header: Mapping[str, Any] | None, kind: str, name: str) -> str:
    """The distribution ``made_by`` names for the ``kind`` component ``name`` (``""``: none,
    or a header that does not say it plainly)."""
    from lmgc_core.coding.provenance import ROLES
    from lmgc_core.components.spec import spec_name

    config = header.get("pipeline") if isinstance(header, Mapping) else None
    made = header.get("made_by") if isinstance(header, Mapping) else None
    if not isinstance(config, Mapping) or not kind or not name:
        return ""
    if isinstance(made, str):
        return made
    if not isinstance(made, Mapping):
        return ""
    if kind in ROLES and spec_name(config.get(kind)) == name:
        label = made.get(kind)
    elif kind == "stage" and isinstance(config.get("stages"), list):
        labels = made.get("stages")
        stages = [spec_name(spec) for spec in config["stages"]]
        at = stages.index(name) if name in stages else -1
        label = labels[at] if isinstance(labels, list) and 0 <= at < len(labels) else None
    else:
        label = None
    return label if isinstance(label, str) else ""


@contextmanager
def options_errors(
    prior_options: Mapping[str, Any] | None, build_recorded: Callable[[], object]
) -> Iterator[None]:
    """A build that fails with the caller's ``prior_options`` (a misspelt key, a bad value) is
    the caller's :class:`ConfigError` when the recorded configuration builds without them
    (``build_recorded``, run only on that failure), or when the error quotes one of their
    text values (a mistyped model path: the stream's own path is another machine's and does
    not build here either); else the stream's error as it was."""
    try:
        yield
    except StreamError as exc:
        if not prior_options:
            raise
        why = str(exc).removeprefix("stream header has an invalid pipeline: ")
        quoted = any(isinstance(v, str) and len(v) > 1 and repr(v) in why
                     for v in prior_options.values())  # fmt: skip
        if not quoted:
            try:
                build_recorded()
            except LMGCError:
                raise exc from None
        raise ConfigError(f"prior_options {dict(prior_options)!r}: {why}") from None
