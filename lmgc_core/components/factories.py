"""Component factories and the options they take, checked before a component is built.

A factory's options are its keyword parameters. A plugin whose component needs heavy imports
registers a :class:`LazyFactory` (``lazy("pkg.module:Class")``): the class is imported only when
a component is built, and its own parameters are the options, so an unknown option is refused
with the list of valid ones (:class:`~lmgc_core.util.errors.UnknownOptionError`) instead of a
``TypeError`` from deep inside the class.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

from lmgc_core.util.errors import PluginError, UnknownOptionError


def parameters(func: Any) -> list[str] | None:
    """The keyword parameters of ``func`` (a function or class); ``None`` when it takes any
    ``**options`` or cannot be inspected."""
    try:
        names = _parameters(func)
    except TypeError:  # unhashable: inspect it afresh
        names = _parameters.__wrapped__(func)
    return None if names is None else list(names)


@functools.lru_cache(maxsize=256)
def _parameters(func: Any) -> tuple[str, ...] | None:
    """:func:`parameters`, remembered: ``inspect.signature`` of a class costs ~0.1 ms, and every
    decode rebuilds its pipeline's components from the stream header."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


class LazyFactory:
    """Builds ``module:Class`` after importing it; ``before(options)`` runs first (e.g. to set
    up an environment the heavy import reads)."""

    def __init__(
        self, target: str, before: Callable[[Mapping[str, Any]], None] | None = None
    ) -> None:
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"a lazy factory's target is 'module:Class', not {target!r}")
        self.module, self.attr, self.before = module, attr, before
        self.__name__ = attr
        self.__module__ = module

    def target(self, load: bool = True) -> Any:
        """The class (``None`` without ``load`` while its module is not imported yet)."""
        if not load and self.module not in sys.modules:
            return None
        module = importlib.import_module(self.module)
        try:
            return getattr(module, self.attr)
        except AttributeError:  # a misspelt target: the plugin's error, not a traceback
            raise PluginError(f"{self!r}: {self.module} has no {self.attr!r}") from None

    def load(self, options: Mapping[str, Any]) -> Any:
        """The class that builds a component with ``options`` (``before`` run, then imported)."""
        if self.before is not None:
            self.before(options)
        return self.target()

    def __call__(self, **options: Any) -> Any:
        return self.load(options)(**options)

    def __repr__(self) -> str:
        return f"lazy({self.module}:{self.attr})"


def lazy(target: str, before: Callable[[Mapping[str, Any]], None] | None = None) -> LazyFactory:
    return LazyFactory(target, before)


def option_names(factory: Any, load: bool = False) -> list[str] | None:
    """The options ``factory`` takes (``None``: any, or not known without importing a lazy
    factory's class and ``load`` is false)."""
    if isinstance(factory, LazyFactory):
        cls = factory.target(load)
        return None if cls is None else parameters(cls)
    return parameters(factory)


def checked(kind: str, name: str, factory: Any, options: Mapping[str, Any]) -> Any:
    """What to call with ``options`` to build the component (a lazy factory's class, loaded);
    options its parameters do not name are refused first, with the valid ones."""
    call = factory.load(options) if isinstance(factory, LazyFactory) else factory
    refuse_unknown(kind, name, parameters(call), options)
    return call


def refuse_unknown(
    kind: str, name: str, valid: list[str] | None, options: Mapping[str, Any]
) -> None:
    """An :class:`UnknownOptionError` for options outside ``valid`` (``None``: any are taken)."""
    unknown = sorted(set(options) - set(valid), key=str) if valid is not None else []
    if valid is not None and unknown:
        raise UnknownOptionError(kind, name, unknown, valid)
