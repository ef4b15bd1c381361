"""Plugin discovery: a pluggy manager fed from the ``lmgc`` entry-point group.

Built-in plugins are discovered exactly like third-party ones (they are listed under the same
entry-point group in ``pyproject.toml``), so they double as worked examples for plugin authors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

KINDS = ("serializer", "prior", "coder", "stage")


@dataclass(frozen=True)
class Registration:
    """One component a plugin offers: how to build it, and what it needs to be built."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    description: str = ""
    missing: tuple[str, ...] = field(default=())

    @property
    def available(self) -> bool:
        return not self.missing


def _missing(modules: Iterable[str]) -> tuple[str, ...]:
    out = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(module)
    return tuple(out)


@cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager with every installed ``lmgc`` plugin loaded."""
    pm = pluggy.PluginManager("lmgc")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    return pm


def _plugin_label(pm: pluggy.PluginManager, plugin: object) -> str:
    for dist_plugin, dist in pm.list_plugin_distinfo():
        if dist_plugin is plugin:
            return f"{dist.project_name} {dist.version}"
    return pm.get_name(plugin) or repr(plugin)


@cache
def registrations() -> dict[tuple[str, str], Registration]:
    """All registered components, keyed by ``(kind, name)``."""
    pm = plugin_manager()
    found: dict[tuple[str, str], Registration] = {}
    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}s")
        for impl in hook.get_hookimpls():
            label = _plugin_label(pm, impl.plugin)

            def register(
                name: str,
                factory: Callable[..., Any],
                *,
                requires: Iterable[str] = (),
                install_hint: str = "",
                description: str = "",
                _kind: str = kind,
                _label: str = label,
            ) -> None:
                key = (_kind, name)
                if key in found:
                    raise PluginError(
                        f"{_kind} {name!r} is registered twice ({found[key].plugin} and {_label})"
                    )
                reqs = tuple(requires)
                found[key] = Registration(
                    _kind, name, factory, _label, reqs, install_hint, description, _missing(reqs)
                )

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not break discovery for the rest
                BROKEN[label] = f"{type(exc).__name__}: {exc}"
    return found


BROKEN: dict[str, str] = {}
"""Plugins whose registration hook raised, with the error (shown by ``lmgc plugins``)."""


def names(kind: str) -> list[str]:
    return sorted(name for (k, name) in registrations() if k == kind)


def get(kind: str, name: str) -> Registration:
    reg = registrations().get((kind, name))
    if reg is None:
        raise PluginError(
            f"unknown {kind} {name!r}; available {kind}s: {', '.join(names(kind)) or 'none'}"
        )
    return reg


def build(kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
    """Instantiate a component, with clear errors for missing dependencies and bad options."""
    reg = get(kind, name)
    if not reg.available:
        hint = f"; install it with: {reg.install_hint}" if reg.install_hint else ""
        raise PluginError(
            f"{kind} {name!r} (from {reg.plugin}) needs {', '.join(reg.missing)}, "
            f"which is not installed{hint}"
        )
    from .errors import ConfigError, LMGCError

    try:
        return reg.factory(**(options or {}))
    except TypeError as exc:
        raise ConfigError(f"bad options for {kind} {name!r}: {exc}") from None
    except LMGCError:
        raise
    except ValueError as exc:
        raise ConfigError(f"bad options for {kind} {name!r}: {exc}") from None
