"""Option names of registered components, for errors that list the valid ones.

A component's options are its factory's keyword parameters (a lazy factory's: its class's, once
imported; see :mod:`lmgc_core.components.factories`, which refuses unknown ones at build time
with a typed :class:`~lmgc_core.util.errors.UnknownOptionError`).
"""

from __future__ import annotations

from typing import Any

from lmgc_core.coding.config_file import check_size
from lmgc_core.components import registry
from lmgc_core.components.factories import option_names, refuse_unknown
from lmgc_core.components.spec import ComponentSpec
from lmgc_core.util.errors import ConfigError


def valid_options(kind: str, name: str) -> list[str] | None:
    """Option names a component's factory takes (None: any ``**kwargs``, or a lazy factory whose
    class is not imported yet: nothing is imported here, before any model loads)."""
    return option_names(registry.get(kind, name).factory)


def takes_option(kind: str, name: str, option: str) -> bool:
    """Whether the component ``name`` has the option ``option`` (its class imported, nothing
    built); a component that takes any ``**options`` has it."""
    options = option_names(registry.get(kind, name).factory, load=True)
    return options is None or option in options


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
        refuse_unknown(kind, spec.name, valid_options(kind, spec.name), spec.options)
