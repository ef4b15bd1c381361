"""Pipeline options of the ``lmgc`` commands and the configuration they build.

Options are declared as data (:data:`PIPELINE_OPTIONS`) and applied by one decorator, so a new
option (``--jobs``, ``--stage``...) is one more entry plus one line in :func:`pipeline_config`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lmgc_core.coding.options import check_component_options
from lmgc_core.components.spec import ComponentSpec, spec_dict
from lmgc_core.util.errors import ConfigError, UnknownComponentError
from lmgc_core.util.json_keys import unique_keys

PIPELINE_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--config", "config"), {"type": click.Path(dir_okay=False), "help": "Pipeline config "
                              "(YAML/TOML/JSON)."}),
    (("--prior",), {"help": "Prior plugin name (float: the default; mix, adaptive, uniform, "
                    "transformers, llamacpp, ...: `lmgc plugins` lists them)."}),
    (("--serializer",), {"help": "Serializer plugin name (hex: the default, iso, ...: "
                         "`lmgc plugins` lists them)."}),
    (("--coder",), {"help": "Entropy coder plugin name (range: the default, ...: `lmgc "
                    "plugins` lists them)."}),
    (("--window",), {"type": int, "help": "Tokens per window, BOS included (default: the "
                     "prior's own; the stream records the one used)."}),
    (("--batch",), {"type": int, "help": "Windows per batch (default: the prior's)."}),
    (("--level", "-l"), {"type": int, "help": "1 = fast (semi-static rANS, default), 2 = "
                         "highest (adaptive context model)."}),
    (("--model",), {"help": "Model file or folder for an LM prior."}),
    (("--prior-option", "-P", "prior_opts"), {"multiple": True, "metavar": "KEY=VALUE",
                                               "help": "Prior option (repeatable); applies to "
                                               "the default prior when --prior is not given."}),
    (("--serializer-option", "-S", "serializer_opts"), {"multiple": True, "metavar": "KEY=VALUE",
                                                        "help": "Serializer option (repeatable)."}),
    (("--stage", "stages"), {"multiple": True, "metavar": "NAME[:K=V,...]|JSON",
                             "help": "Append a stage, e.g. quantize:bits=8 or '{\"name\": "
                             "\"quantize\", \"bits\": 8}' (repeatable; after the config "
                             "file's stages)."}),
]  # fmt: skip

JOBS_OPTION = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=0),
    default=0,
    show_default="0 = all cores",
    help="Threads coding chunks and their blocks at once (same bytes for any N).",
)


def pipeline_options(f: Callable) -> Callable:
    """Adds :data:`PIPELINE_OPTIONS` to a command; one that takes one value refuses a second
    (``--config a --config b`` dropped ``a``, a lossy stage included, and ``-l 2 -l 1`` coded
    at level 1, silently)."""
    for decls, attrs in reversed(PIPELINE_OPTIONS):
        if not attrs.get("multiple"):
            attrs = {**attrs, "multiple": True, "callback": _once}
        f = click.option(*decls, **attrs)(f)
    return f


def _once(ctx: click.Context, param: click.Parameter, values: tuple[Any, ...]) -> Any:
    if len(values) > 1:
        raise click.BadParameter(f"given {len(values)} times; give it once", ctx, param)
    return values[0] if values else None


_UNIQUE = unique_keys(lambda key: ConfigError(f"key {key!r} is given twice in an option's JSON"))
"""As config files refuse it: json.loads kept a repeated key's last value without a word."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_UNIQUE)
    except RecursionError:  # nested deeper than json.loads goes; the size caps come later
        raise ConfigError(f"option value {_short(text)} is nested too deeply") from None
    except ConfigError:
        raise
    except ValueError:
        return text


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"options are KEY=VALUE, not {pair!r}")
        if key in out:  # the last one silently won
            raise ConfigError(f"option {key!r} is given twice")
        out[key] = _parse_value(value)
    return out


def stage_spec(text: str) -> dict[str, Any]:
    """``--stage NAME[:KEY=VALUE,...]`` or a JSON object ``{"name": NAME, ...}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text, object_pairs_hook=_UNIQUE)
        except ConfigError:
            raise
        except (ValueError, RecursionError) as exc:
            raise ConfigError(f"--stage {_short(text)} is not valid JSON: {exc}") from None
        if isinstance(spec, dict):
            with contextlib.suppress(ConfigError):
                return ComponentSpec.parse(spec).to_dict()
        raise ConfigError(f"--stage {_short(text)} must be a JSON object with a 'name'")
    name, _, opts = text.partition(":")
    if not name:
        raise ConfigError(f"--stage is NAME[:KEY=VALUE,...] or a JSON object, not {text!r}")
    return {"name": name, **parse_pairs(tuple(o for o in opts.split(",") if o))}


def _short(text: str, most: int = 60) -> str:
    """``text`` for an error line: quoted, cut to ``most`` characters."""
    return repr(text) if len(text) <= most else repr(text[:most]) + "..."


def check_model_path(model: str | None) -> None:
    """A ``--model`` path must exist here (otherwise a prior would go looking for a default
    model and blame a missing package)."""
    if model is not None and not Path(model).exists():
        raise ConfigError(f"--model {model}: no such file or folder")


def pipeline_config(
    config: str | None = None,
    prior: str | None = None,
    serializer: str | None = None,
    coder: str | None = None,
    window: int | None = None,
    batch: int | None = None,
    level: int | None = None,
    model: str | None = None,
    prior_opts: tuple[str, ...] = (),
    serializer_opts: tuple[str, ...] = (),
    stages: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The pipeline configuration the options describe: the config file, then the named
    components, then ``-P``/``-S`` options (onto the default component when none is named)."""
    from lmgc_core.coding.config_file import load_config
    from lmgc_core.coding.pipeline import DEFAULTS

    check_model_path(model)
    cfg: dict[str, Any] = load_config(config) if config else {}
    if stages:  # appended after the config file's stages, in the order given
        given = cfg.get("stages") or []
        if not isinstance(given, list):  # a string's letters were taken for stage names
            raise ConfigError(f"stages must be a list, not {given!r}")
        cfg["stages"] = [*given, *map(stage_spec, stages)]
    for key, name, opts in (
        ("prior", prior, prior_opts),
        ("serializer", serializer, serializer_opts),
        ("coder", coder, ()),
    ):
        current = cfg.get(key)
        if current is not None and not isinstance(current, str | dict):
            raise ConfigError(f"{key} must be a name or a mapping with a 'name', not {current!r}")
        current = spec_dict(current or {})
        if name:
            current = {"name": name} if current.get("name") != name else current
        extra = parse_pairs(opts)
        if key == "prior" and model:
            extra["model"] = model
        if extra and "name" not in current:
            current["name"] = DEFAULTS[key]["name"]
        current.update(extra)
        if current:
            cfg[key] = current
    if window is not None:
        cfg["window"] = window
    if batch is not None:
        cfg["batch"] = batch
    if level is not None:  # the pipeline merges it into the prior's spec
        cfg["level"] = level
    check_component_options(cfg)
    return cfg


STEP_PRIORS = ("adaptive", "uniform", "mix", "transformers", "llamacpp")
"""Built-in priors that code symbol by symbol, the ones ``--window``, ``--batch`` and
``--serializer`` shape (named in the error for a prior that codes whole arrays)."""


def build_pipeline(**options: Any) -> Any:
    """The :class:`~lmgc_core.coding.pipeline.Pipeline` the command-line options describe."""
    from lmgc_core.coding.pipeline import Pipeline

    try:
        pipeline = Pipeline.from_config(pipeline_config(**options))
    except UnknownComponentError as exc:  # a name typed wrong is a usage error
        if not exc.plugins_failed:  # ... but a plugin that failed to load may be the cause
            raise ConfigError(str(exc)) from None
        raise
    refuse_unused_step_options(pipeline)
    return pipeline


def refuse_unused_step_options(pipeline: Any) -> None:
    """A prior with an array path (float) codes values, never symbols: a window, batch or
    serializer other than the one it gets anyway changed nothing but the header, silently, while
    the user expected an effect. Their defaults (a recorded config from ``lmgc info``) pass."""
    from lmgc_core.coding.pipeline import DEFAULTS
    from lmgc_core.components.interfaces import ArrayCoding

    prior = pipeline.prior
    if not isinstance(prior, ArrayCoding):
        return
    default = ComponentSpec.parse(DEFAULTS["serializer"], "serializer").build("serializer")
    unused = [
        f"--window {pipeline.window}" if pipeline.window != prior.default_window else "",
        f"--batch {pipeline.batch}" if pipeline.batch != prior.default_batch_size else "",
        _serializer_change(ComponentSpec.of(default).to_dict(), pipeline.serializer),
    ]
    if any(unused):
        raise ConfigError(
            f"{' '.join(u for u in unused if u)} would do nothing: prior {prior.name!r} codes "
            "whole arrays, not windows of symbols; --window, --batch and --serializer (-S) apply "
            f"to priors that code symbol by symbol ({', '.join(STEP_PRIORS)}, ...)"
        )


def _serializer_change(default: dict[str, Any], serializer: Any) -> str:
    """How the options changed the default serializer, as the user typed it ("" if not)."""
    given = ComponentSpec.of(serializer).to_dict()
    if given["name"] != default["name"]:
        return f"--serializer {given['name']}"
    return " ".join(f"-S {k}={json.dumps(v)}" for k, v in given.items() if default.get(k) != v)
