"""Option names of registered components, for errors that list the valid ones.

A component's options are its factory's keyword parameters. A lazy factory
(``def factory(**options)`` importing its class when called) cannot be inspected beforehand; when
its class rejects an option, :func:`explain_bad_option` finds the class and lists its options.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

from lmgc_core.coding.config_file import check_size
from lmgc_core.components import registry
from lmgc_core.components.spec import ComponentSpec
from lmgc_core.util.errors import ConfigError


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
    """Refuse unknown component options with the list of valid ones (before any model loads),
    and configurations over the size caps of :func:`~lmgc_core.coding.config_file.check_size` (a
    ``-P layout=[...]`` or ``--stage`` JSON value included)."""
    check_size(cfg, "the pipeline configuration")
    specs = [(k, cfg[k]) for k in ("serializer", "prior", "coder") if k in cfg]
    stages = cfg.get("stages")
    specs += [("stage", s) for s in stages] if isinstance(stages, list) else []
    for kind, value in specs:
        try:
            spec = ComponentSpec.parse(value, kind)
        except ConfigError:
            continue  # Pipeline.from_config explains malformed specs
        valid = valid_options(kind, spec.name)
        unknown = sorted(set(spec.options) - set(valid or ()))
        if valid is not None and unknown:
            raise ConfigError(
                f"{kind} {spec.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
