"""Pipeline options of the ``lmgc`` commands and the configuration they build.

Options are declared as data (:data:`PIPELINE_OPTIONS`) and applied by one decorator, so a new
option (``--jobs``, ``--stage``...) is one more entry plus one line in :func:`pipeline_config`.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import registry
from .errors import ConfigError, PluginError

PIPELINE_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--config", "config"), {"type": click.Path(dir_okay=False), "help": "Pipeline config "
                              "(YAML/TOML/JSON)."}),
    (("--prior",), {"help": "Prior plugin name (adaptive, uniform, transformers, llamacpp...)."}),
    (("--serializer",), {"help": "Serializer plugin name (hex, iso)."}),
    (("--coder",), {"help": "Entropy coder plugin name (range)."}),
    (("--window",), {"type": int, "help": "Tokens per window, BOS included (default: the "
                     "prior's own; the stream records the one used)."}),
    (("--batch",), {"type": int, "help": "Windows per batch (default: the prior's)."}),
    (("--model",), {"help": "Model file or folder for an LM prior."}),
    (("--prior-option", "-P", "prior_opts"), {"multiple": True, "metavar": "KEY=VALUE",
                                               "help": "Prior option (repeatable); applies to "
                                               "the default prior when --prior is not given."}),
    (("--serializer-option", "-S", "serializer_opts"), {"multiple": True, "metavar": "KEY=VALUE",
                                                        "help": "Serializer option (repeatable)."}),
]  # fmt: skip


def pipeline_options(f: Callable) -> Callable:
    """Adds :data:`PIPELINE_OPTIONS` to a command."""
    for decls, attrs in reversed(PIPELINE_OPTIONS):
        f = click.option(*decls, **attrs)(f)
    return f


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"options are KEY=VALUE, not {pair!r}")
        out[key] = _parse_value(value)
    return out


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
    model: str | None = None,
    prior_opts: tuple[str, ...] = (),
    serializer_opts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The pipeline configuration the options describe: the config file, then the named
    components, then ``-P``/``-S`` options (onto the default component when none is named)."""
    from .config_file import load_config
    from .pipeline import DEFAULTS

    check_model_path(model)
    cfg: dict[str, Any] = load_config(config) if config else {}
    for key, name, opts in (
        ("prior", prior, prior_opts),
        ("serializer", serializer, serializer_opts),
        ("coder", coder, ()),
    ):
        current = cfg.get(key)
        current = {"name": current} if isinstance(current, str) else dict(current or {})
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
    check_component_options(cfg)
    return cfg


def build_pipeline(**options: Any) -> Any:
    """The :class:`~lmgc_core.pipeline.Pipeline` the command-line options describe."""
    from .pipeline import Pipeline

    try:
        return Pipeline.from_config(pipeline_config(**options))
    except ConfigError as exc:
        raise explain_bad_option(exc) from None
    except PluginError as exc:  # a name typed wrong is a usage error; a missing package is not
        if str(exc).startswith("unknown "):
            raise ConfigError(str(exc)) from None
        raise


def _parameters(func: Any) -> list[str] | None:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def valid_options(kind: str, name: str) -> list[str] | None:
    """Option names a component's factory takes (None: it takes any ``**kwargs``)."""
    return _parameters(registry.get(kind, name).factory)


def explain_bad_option(exc: ConfigError) -> ConfigError:
    """A lazy factory (``def factory(**options)`` that imports its class when called) cannot be
    checked beforehand; when the class then rejected an option, name the valid ones."""
    found = re.search(r"(prior|serializer|coder|stage) '([^']+)': (\w+)\.__init__\(\) got an "
                      r"unexpected keyword argument '([^']+)'", str(exc))  # fmt: skip
    if not found:
        return exc
    kind, name, cls_name, option = found.groups()
    package = getattr(registry.get(kind, name).factory, "__module__", "").split(".")[0]
    for module_name, module in list(sys.modules.items()):
        cls = getattr(module, cls_name, None) if module_name.startswith(package) else None
        valid = _parameters(cls) if inspect.isclass(cls) else None
        if valid is not None:
            return ConfigError(
                f"{kind} {name!r} has no option {option!r}; valid options: {', '.join(valid)}"
            )
    return exc


def check_component_options(cfg: dict[str, Any]) -> None:
    """Refuse unknown component options with the list of valid ones (before any model loads)."""
    specs = [(k, cfg[k]) for k in ("serializer", "prior", "coder") if k in cfg]
    stages = cfg.get("stages")
    specs += [("stage", s) for s in stages] if isinstance(stages, list) else []
    for kind, spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue  # Pipeline.from_config explains malformed specs
        valid = valid_options(kind, spec["name"])
        unknown = sorted(set(spec) - {"name"} - set(valid or ()))
        if valid is not None and unknown:
            raise ConfigError(
                f"{kind} {spec['name']!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
