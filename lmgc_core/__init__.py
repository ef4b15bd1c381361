"""lmgc: lossless gradient compression with language models as priors for range coding.

``import lmgc_core`` is cheap: no torch, transformers or llama_cpp (plugins import those lazily),
and not even numpy until :class:`Pipeline` or a function below is first used, so the ``lmgc``
command (:mod:`lmgc_core.__main__`) controls how its own imports run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmgc_core import _moved
from lmgc_core.util.errors import (
    ChecksumError,
    ConfigError,
    LMGCError,
    MismatchError,
    PluginError,
    StreamError,
    TruncatedStreamError,
)

if TYPE_CHECKING:
    from lmgc_core.coding.pipeline import Pipeline, compress, decompress, read_header

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "ConfigError",
    "LMGCError",
    "MismatchError",
    "Pipeline",
    "PluginError",
    "StreamError",
    "TruncatedStreamError",
    "__version__",
    "compress",
    "decompress",
    "read_header",
]


_moved.install()

_FROM_PIPELINE = frozenset({"Pipeline", "compress", "decompress", "read_header"})


def __getattr__(name: str) -> Any:
    """The pipeline API, imported on first use (PEP 562) and then kept as a module attribute:
    this hook ran on every ``lmgc_core.decompress`` (~1.5 us of a small tensor's decode)."""
    if name in _FROM_PIPELINE:
        from lmgc_core.coding import pipeline

        value = globals()[name] = getattr(pipeline, name)
        return value
    moved = _moved.new_name(f"{__name__}.{name}")
    if moved is not None:  # an old module path, e.g. ``lmgc_core.components.registry``
        import importlib

        return importlib.import_module(moved)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
