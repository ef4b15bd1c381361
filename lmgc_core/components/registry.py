"""Plugin discovery: a pluggy manager fed from the ``lmgc`` entry-point group, one entry point
at a time.

Built-in plugins are discovered exactly like third-party ones (they are listed under the same
entry-point group in ``pyproject.toml``), so they double as worked examples for plugin authors.

A plugin that fails (its import raises, a ``register_*`` hook raises, or it registers a name that
another plugin also registers) is *isolated*: it is listed as broken by ``lmgc plugins`` with a
one-line reason, and only an attempt to use it fails, with a :class:`PluginError` that names the
plugin and the reason. Everything else keeps working.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import pluggy

from lmgc_core.components import hookspecs
from lmgc_core.components.entry_points import EntryPoint, entry_points
from lmgc_core.components.factories import checked
from lmgc_core.util.errors import ConfigError, LMGCError, PluginError, UnknownComponentError

KINDS = ("serializer", "prior", "coder", "stage")
CORE_DISTRIBUTION = "lmgc"
"""The distribution of lmgc itself: its built-in components win a name clash."""


@dataclass(frozen=True)
class Source:
    """Where a plugin comes from: the distribution that installed it, or a run-time
    :func:`add_plugin` (``distribution == ""``)."""

    label: str
    """``"<distribution> <version>"``, as shown by ``lmgc plugins`` and in error messages."""
    distribution: str = ""
    version: str = ""
    module: str = ""
    """Importable module of the plugin (lets a fresh process register it again)."""


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
    distribution: str = ""
    """Distribution that registered the component (``""`` for a run-time registration)."""
    version: str = ""
    broken: str = ""
    """Why the component cannot be used (its plugin failed, or its name is taken twice)."""

    @property
    def available(self) -> bool:
        return not self.missing and not self.broken


BROKEN: dict[str, str] = {}
"""Plugins that failed to load or register (label -> one-line reason), shown by
``lmgc plugins``. Filled by :func:`plugin_manager` and :func:`registrations`."""

_FAILED: dict[str, str] = {}
"""The part of :data:`BROKEN` about plugins that failed to load or register: any of them may
be the one that would have provided an unknown name."""

_RUNTIME: list[tuple[object, Source]] = []


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


def one_line(exc: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, short enough for a listing."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _note(notes: dict[str, str], label: str, reason: str) -> None:
    notes[label] = f"{notes[label]}; {reason}" if label in notes else reason


@dataclass
class _Loaded:
    pm: pluggy.PluginManager
    sources: dict[int, Source] = field(default_factory=dict)
    """``id(plugin object) -> Source`` (the objects stay alive inside ``pm``)."""
    broken: dict[str, str] = field(default_factory=dict)
    """Plugins that failed to import, register or add their commands."""


def _source(ep: EntryPoint) -> Source:
    name, version = ep.dist_name, ep.dist_version
    label = f"{name} {version}" if name else f"{ep.name} = {ep.value}"
    return Source(label, name, version, ep.value.partition(":")[0])


def _register(loaded: _Loaded, plugin: object, source: Source, key: str) -> None:
    try:
        loaded.pm.register(plugin, name=key)
    except (Exception, SystemExit) as exc:  # bad hook signatures, the same module twice...
        _note(loaded.broken, source.label, f"cannot be registered: {one_line(exc)}")
        return
    loaded.sources[id(plugin)] = source


_STDOUT_IS_DATA = False


def stdout_is_data() -> None:
    """Called by the ``lmgc`` command: from now on, plugin code run while plugins load prints
    to stderr, since stdout may be the data (``lmgc decompress X -o -``): a plugin's "loaded"
    line began the output, exit 0. Only there: ``redirect_stdout`` swaps the process's
    ``sys.stdout``, which in a program of several threads would catch their prints too."""
    global _STDOUT_IS_DATA
    _STDOUT_IS_DATA = True


def _no_stdout() -> contextlib.AbstractContextManager[Any]:
    """See :func:`stdout_is_data`."""
    return contextlib.redirect_stdout(sys.stderr) if _STDOUT_IS_DATA else contextlib.nullcontext()


@cache
def _loaded() -> _Loaded:
    registrations.cache_clear()
    pm = pluggy.PluginManager("lmgc")
    pm.add_hookspecs(hookspecs)
    loaded = _Loaded(pm)
    eps = entry_points(hookspecs.ENTRY_POINT_GROUP)
    sourced = [(_source(ep), ep) for ep in eps]
    for source, ep in sorted(sourced, key=lambda p: (p[0].label, p[1].name)):
        try:
            with _no_stdout():
                plugin = ep.load()
        except (Exception, SystemExit) as exc:  # one broken plugin must not break the others
            _note(loaded.broken, source.label, f"import of {ep.value!r} failed: {one_line(exc)}")
            continue
        _register(loaded, plugin, source, f"{source.distribution}:{ep.name}")
    for plugin, source in _RUNTIME:
        _register(loaded, plugin, source, f"runtime:{id(plugin)}:{source.label}")
    return loaded


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager with every loadable ``lmgc`` plugin registered."""
    return _loaded().pm


def add_plugin(plugin: object, label: str | None = None) -> None:
    """Register a plugin object (usually a module with ``@hookimpl`` functions) at run time,
    as if it were installed: for notebooks and tests. Undo with :func:`remove_plugin`."""
    module = getattr(plugin, "__name__", "") if hasattr(plugin, "__spec__") else ""
    label = label or module or repr(plugin)
    _RUNTIME.append((plugin, Source(label, "", "", module)))
    reset()


def remove_plugin(plugin: object) -> None:
    """Undo :func:`add_plugin`."""
    _RUNTIME[:] = [(p, s) for p, s in _RUNTIME if p is not plugin]
    reset()


def runtime_plugins() -> list[Source]:
    """Plugins added with :func:`add_plugin` (the conformance kit re-adds them in a fresh
    process)."""
    return [source for _, source in _RUNTIME]


_ON_RESET: list[Callable[[], None]] = []


def on_reset(forget: Callable[[], None]) -> None:
    """Call ``forget`` on every :func:`reset`: caches of built components (the codecs' pipeline
    cache) hold components of the registry that was, and register here instead of this module
    importing them (the registry is the lower layer)."""
    if forget not in _ON_RESET:
        _ON_RESET.append(forget)


def reset() -> None:
    """Forget what was discovered: the next use scans the entry points again."""
    _loaded.cache_clear()
    registrations.cache_clear()
    BROKEN.clear()
    _FAILED.clear()
    for forget in list(_ON_RESET):
        forget()


def _collect(loaded: _Loaded, kind: str, notes: dict[str, str]) -> list[Registration]:
    """Every registration of ``kind``, in plugin order; failing hooks mark theirs broken."""
    out: list[Registration] = []
    hook = getattr(loaded.pm.hook, f"register_{kind}s")
    for impl in hook.get_hookimpls():
        source = loaded.sources.get(id(impl.plugin)) or Source(impl.plugin_name)
        made: list[Registration] = []

        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            requires: Iterable[str] = (),
            install_hint: str = "",
            description: str = "",
            _kind: str = kind,
            _source: Source = source,
            _made: list[Registration] = made,
        ) -> None:
            if not isinstance(name, str) or not name.strip():
                raise PluginError(f"a {_kind} name must be a non-empty string, not {name!r}")
            if not callable(factory):
                raise PluginError(f"the factory of {_kind} {name!r} is not callable")
            reqs = tuple(requires)
            _made.append(
                Registration(
                    _kind,
                    name,
                    factory,
                    _source.label,
                    reqs,
                    install_hint,
                    description,
                    _missing(reqs),
                    _source.distribution,
                    _source.version,
                )
            )

        try:
            with _no_stdout():
                impl.function(register=register)
        except (Exception, SystemExit) as exc:
            reason = f"register_{kind}s failed: {one_line(exc)}"
            _note(notes, source.label, reason)
            made[:] = [replace(r, broken=reason) for r in made]
        out.extend(made)
    return out


def _resolve(kind: str, name: str, regs: list[Registration], notes: dict[str, str]) -> Registration:
    """One registration per name: a stream records only the name, so it must mean one thing.
    lmgc's own component wins a clash with a plugin; any other clash breaks the name."""
    if len(regs) == 1:
        return regs[0]
    core = [r for r in regs if r.distribution == CORE_DISTRIBUTION]
    if len(core) == 1:
        for other in regs:
            if other is not core[0]:
                _note(notes, other.plugin, f"its {kind} {name!r} is ignored: lmgc has its own")
        return core[0]
    labels = " and ".join(r.plugin for r in regs)
    reason = f"{kind} {name!r} is registered {len(regs)} times ({labels}); uninstall all but one"
    return replace(regs[0], plugin=labels, broken=reason)


@cache
def registrations() -> dict[tuple[str, str], Registration]:
    """All registered components, keyed by ``(kind, name)`` (broken ones included)."""
    loaded = _loaded()
    failed = dict(loaded.broken)
    by_kind: dict[str, dict[str, list[Registration]]] = {}
    for kind in KINDS:
        for reg in _collect(loaded, kind, failed):
            by_kind.setdefault(kind, {}).setdefault(reg.name, []).append(reg)
    notes = dict(failed)
    found: dict[tuple[str, str], Registration] = {}
    for kind, by_name in by_kind.items():
        for name, regs in by_name.items():
            found[(kind, name)] = _resolve(kind, name, regs, notes)
    _FAILED.clear()
    _FAILED.update(failed)
    BROKEN.clear()
    BROKEN.update(notes)
    return found


def add_commands(cli: Any) -> None:
    """Let every plugin add its sub-commands; a failing one is noted as broken and skipped. A
    command named like one that is already there (lmgc's ``compress``) is ignored, and said:
    ``--help`` listed the plugin's while ``lmgc compress`` ran lmgc's."""
    loaded = _loaded()
    for impl in loaded.pm.hook.register_commands.get_hookimpls():
        source = loaded.sources.get(id(impl.plugin)) or Source(impl.plugin_name)
        before = dict(cli.commands)
        try:
            with _no_stdout():
                impl.function(cli=cli)
        except (Exception, SystemExit) as exc:
            _note(loaded.broken, source.label, f"register_commands failed: {one_line(exc)}")
            registrations.cache_clear()  # so that BROKEN shows it
        for name, command in before.items():
            if cli.commands.get(name) is not command:
                cli.commands[name] = command
                _note(loaded.broken, source.label, f"its command {name!r} is ignored: taken")
                registrations.cache_clear()


def model_loads() -> dict[str, int]:
    """Model loads so far in this process, from every plugin implementing the ``model_loads``
    hook (one that fails is left out: these are statistics)."""
    counts: dict[str, int] = {}
    for impl in plugin_manager().hook.model_loads.get_hookimpls():
        try:
            counts.update({str(k): int(v) for k, v in impl.function().items()})
        except Exception:
            continue
    return counts


def names(kind: str) -> list[str]:
    return sorted(name for (k, name) in registrations() if k == kind)


def get(kind: str, name: str) -> Registration:
    reg = registrations().get((kind, name))
    if reg is None:
        failed = "; ".join(f"{label} ({why})" for label, why in _FAILED.items())
        raise UnknownComponentError(
            f"unknown {kind} {name!r}; available {kind}s: {', '.join(names(kind)) or 'none'}"
            + (f"; plugins that failed to load, one may provide it: {failed}" if failed else ""),
            plugins_failed=bool(failed),
            kind=kind,
            name=name,
        )
    return reg


def _import_failure(reg: Registration, exc: ImportError) -> PluginError:
    missing = exc.name or "a module"
    if reg.install_hint:
        fix = f"install it with: {reg.install_hint}"
    else:
        fix = (
            f"install {missing}; the plugin should list it in requires=(...) so that "
            "`lmgc plugins` can tell in advance"
        )
    return PluginError(
        f"{reg.kind} {reg.name!r} (from {reg.plugin}) failed to import {missing} "
        f"({one_line(exc)}); {fix}"
    )


_RECORDED: ContextVar[bool] = ContextVar("lmgc_recorded_config", default=False)


@contextmanager
def recorded() -> Iterator[None]:
    """Build components from a *recorded* configuration (a stream header, stored codec metadata,
    a fixture's index): an option it leaves out means the value its absence has always meant,
    the class's ``recorded_defaults`` (the float prior: ``level`` 2), not today's default, which
    may have changed since (a new pipeline without a level is fast). Nested builds (a mixture's
    experts) follow it too."""
    token = _RECORDED.set(True)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def building_recorded() -> bool:
    """True inside :func:`recorded` (e.g. to key caches of pipelines built either way)."""
    return _RECORDED.get()


def build(kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
    """Instantiate a component, with clear errors for broken plugins, missing dependencies,
    bad options and a class whose ``name`` differs from the registered one. Inside
    :func:`recorded`, options left out take the class's ``recorded_defaults``."""
    component = _build(kind, name, options or {})
    if _RECORDED.get():
        implied = getattr(type(component), "recorded_defaults", {})
        missing = {k: v for k, v in implied.items() if k not in (options or {})}
        if any(getattr(component, k, v) != v for k, v in missing.items()):
            component = _build(kind, name, {**(options or {}), **missing})
    return component


def _build(kind: str, name: str, options: dict[str, Any]) -> Any:
    reg = get(kind, name)
    if reg.broken:
        raise PluginError(f"{kind} {name!r} (from {reg.plugin}) is broken: {reg.broken}")
    if reg.missing:
        hint = f"; install it with: {reg.install_hint}" if reg.install_hint else ""
        raise PluginError(
            f"{kind} {name!r} (from {reg.plugin}) needs {', '.join(reg.missing)}, "
            f"which is not installed{hint}"
        )
    try:
        component = checked(kind, name, reg.factory, options)(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for {kind} {name!r}: {exc}") from None
    except LMGCError:
        raise
    except ValueError as exc:
        raise ConfigError(f"bad options for {kind} {name!r}: {exc}") from None
    except ImportError as exc:  # a lazy import the plugin did not declare in ``requires``
        raise _import_failure(reg, exc) from exc
    built_name = getattr(component, "name", None)
    if built_name != name:
        raise PluginError(
            f"{kind} {name!r} (from {reg.plugin}) builds a {type(component).__name__} whose "
            f"`name` is {built_name!r}: streams record that name, so they could not be decoded; "
            f"set `name = {name!r}` on the class"
        )
    return component


def registration_of(kind: str, component: Any) -> Registration | None:
    """The registration a built component came from (looked up by its ``name``)."""
    return registrations().get((kind, getattr(component, "name", "")))
