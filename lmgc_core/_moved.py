"""The module paths lmgc had before its subpackages, still importable.

``from lmgc_core.errors import LMGCError`` (or ``lmgc_core.registry``, ``lmgc_core.numcodecs_codec``
...) is how users, plugins and documents written before the layout change import lmgc
(``lmgc_core.cli`` is a package now; ``lmgc_core.cli.main`` still answers). Each old
path is the *same module object* as its new home (so ``monkeypatch`` and ``isinstance`` agree),
served by one finder over the table below instead of one shim file per module. New code imports
the new paths; tests/architecture/test_layers.py forbids the old ones inside lmgc.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from types import ModuleType

MOVED: dict[str, str] = {
    "errors": "util.errors",
    "dtypes": "util.dtypes",
    "bytes_layout": "util.bytes_layout",
    "parallel": "util.parallel",
    "interrupts": "util.interrupts",
    "progress": "util.progress",
    "interfaces": "components.interfaces",
    "hookspecs": "components.hookspecs",
    "entry_points": "components.entry_points",
    "registry": "components.registry",
    "component_options": "coding.options",
    "container": "stream.container",
    "stream_notes": "stream.notes",
    "models": "lm.models",
    "pipeline": "coding.pipeline",
    "engine": "coding.engine",
    "probability": "coding.probability",
    "provenance": "coding.provenance",
    "config_file": "coding.config_file",
    "layout": "files.segments",
    "npy_format": "files.npy",
    "npz_format": "files.npz",
    "safetensors_format": "files.safetensors_file",
    "torch_format": "files.torch_zip",
    "torch_pickle": "files.torch_pickle",
    "zip_scan": "files.zip_scan",
    "archive": "files.archive",
    "source_hash": "files.source_hash",
    "io": "files.readers",
    "writers": "files.writers",
    "filecodec": "files.filecodec",
    "folders": "files.folders",
    "inspect_archive": "files.describe",
    "cli_files": "files.outputs",
    "numcodecs_codec": "codecs.numcodecs_codec",
    "zarr_codec": "codecs.zarr_codec",
    "dask": "codecs.dask",
    "codecs.time_axis": "coding.time_axis",
    "cli_options": "cli.options",
    "hf": "integrations.hf",
}
"""Old module name under ``lmgc_core`` -> its path under ``lmgc_core`` now."""


def new_name(old: str) -> str | None:
    """``lmgc_core.<new path>`` for an old module name ``lmgc_core.<old>``; None if not moved."""
    prefix, _, leaf = old.partition(".")
    if prefix != "lmgc_core" or leaf not in MOVED:
        return None
    return f"lmgc_core.{MOVED[leaf]}"


class _Alias:
    """Answers an old name with the module already imported (or imported now) under its new one.
    A meta path finder and loader by the protocol alone (``find_spec``, ``create_module``,
    ``exec_module``): subclassing ``importlib.abc``'s classes would import that module, ~6 ms
    of every ``lmgc`` command's start-up."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=new)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(str(spec.origin))
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the module; give it its own back.
        module.__spec__ = self._own_spec


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
