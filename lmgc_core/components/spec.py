"""A component spec: the name of a registered component and its options, read in one place.

Configurations, stream headers, ``-P``/``--stage`` options and mixtures write a component either
as a bare name (``"hex"``) or as a mapping (``{"name": "float", "level": 2}``); every reader of a
spec goes through :class:`ComponentSpec` (strict) or :func:`spec_dict` / :func:`spec_name`
(lenient, for code that leaves malformed specs to the strict reader).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lmgc_core.components import registry
from lmgc_core.util.errors import ConfigError
from lmgc_core.util.mappings import is_mapping


@dataclass(frozen=True)
class ComponentSpec:
    """``name`` and ``options`` of one component (``{"name": name, **options}`` in a config)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, what: str = "component") -> ComponentSpec:
        """A name or a mapping with a string ``name``; a :class:`ConfigError` naming ``what``
        (e.g. ``"prior"``) for anything else."""
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            return cls(value["name"], {k: v for k, v in value.items() if k != "name"})
        raise ConfigError(f"{what} must be a name or a mapping with a 'name', not {value!r}")

    @classmethod
    def of(cls, component: Any) -> ComponentSpec:
        """The spec a built component records (its class's ``name`` and ``get_config()``)."""
        return cls(component.name, dict(component.get_config()))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    def build(self, kind: str) -> Any:
        """The component, through the registry (its clear errors included)."""
        return registry.build(kind, self.name, dict(self.options))


def spec_dict(value: Any) -> Any:
    """A name as ``{"name": value}``, a mapping as a new dict, anything else unchanged (so the
    strict reader can still explain it)."""
    if isinstance(value, str):
        return {"name": value}
    return dict(value) if isinstance(value, Mapping) else value


def spec_name(value: Any) -> Any:
    """The name a spec gives (``None`` for a mapping without one; anything else unchanged)."""
    return value.get("name") if is_mapping(value) else value
