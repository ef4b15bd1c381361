"""pluggy hook specifications: the only contract between lmgc and a plugin package.

A plugin module (built-in or third party) is listed under the ``lmgc`` entry-point group and
implements any of these hooks. Each hook receives a ``register`` callable, in the style of
simonw's ``llm`` (``register_models``): the plugin calls it once per component it provides.
Registering a *factory* rather than an instance keeps heavy imports (torch, llama_cpp) out of
plugin discovery: they happen only when a component is actually built.

Every hook implementation is called on its own: one that raises marks its plugin (and whatever
it registered before raising) broken, and the other plugins are unaffected (see
:mod:`lmgc_core.components.registry`). The full contract is in docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

import pluggy

ENTRY_POINT_GROUP = "lmgc"

hookspec = pluggy.HookspecMarker("lmgc")
hookimpl = pluggy.HookimplMarker("lmgc")


@hookspec
def register_serializers(register: Any) -> None:
    """Call ``register(name, factory, requires=(...), install_hint=..., description=...)`` once
    per serializer. ``name`` must equal the built class's ``name``; ``factory(**options)``
    builds it; ``requires`` are importable modules the factory needs (missing ones make the
    component unavailable, with ``install_hint``)."""


@hookspec
def register_priors(register: Any) -> None:
    """Register Prior factories (``factory(**options) -> Prior``)."""


@hookspec
def register_coders(register: Any) -> None:
    """Register EntropyCoder factories."""


@hookspec
def register_stages(register: Any) -> None:
    """Register Stage factories (array -> array pre-stages, lossy or not)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``lmgc`` click group (e.g. ``bench``, ``collect``)."""


@hookspec
def model_loads() -> dict[str, int]:
    """``{label: count}``: how many times this process has loaded a model so far (priors that
    load models cache them per process, so a Dask worker or a Zarr codec loads each once).
    Implemented by the LM priors; shown in ``pipeline_cache_info()["model_loads"]``. Count
    without importing anything heavy (0 before the first load)."""
