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
from lmgc_core.util.errors import ConfigError, LMGCError, StreamError, UnknownComponentError


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
            raise StreamError("stream header has no pipeline configuration")
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
    except ConfigError as exc:
        raise StreamError(f"stream header has an invalid pipeline: {exc}") from None
    except UnknownComponentError as exc:
        makers = _makers(header)
        if not makers:
            raise
        raise UnknownComponentError(
            f"{exc}; the stream was made with {makers}: install it", exc.plugins_failed
        ) from None


def _makers(header: Mapping[str, Any] | None) -> str:
    """The distributions other than lmgc's own that ``made_by`` names (``""``: none)."""
    from lmgc_core.coding.provenance import _describe, _record

    config = header.get("pipeline") if header is not None else None
    if not isinstance(config, Mapping):
        return ""
    record = _record(header.get("made_by"), config) if header is not None else None
    if record is None:
        return ""
    return ", ".join(
        f"{component} from {label}"
        for component, label in _describe(config, record)
        if label != "?" and not label.startswith("lmgc ")
    )


@contextmanager
def options_errors(
    prior_options: Mapping[str, Any] | None, build_recorded: Callable[[], object]
) -> Iterator[None]:
    """A build that fails with the caller's ``prior_options`` (a misspelt key, a bad value) is
    the caller's :class:`ConfigError` when the recorded configuration builds without them
    (``build_recorded``, run only on that failure), else the stream's error as it was."""
    try:
        yield
    except StreamError as exc:
        if not prior_options:
            raise
        try:
            build_recorded()
        except LMGCError:
            raise exc from None
        why = str(exc).removeprefix("stream header has an invalid pipeline: ")
        raise ConfigError(f"prior_options {dict(prior_options)!r}: {why}") from None
