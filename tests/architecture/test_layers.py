"""The core's layers, enforced: a module imports only from its own subpackage or lower ones.

The order (docs/architecture.md draws it) is the reason for the subpackages: ``util`` knows
nothing, ``components`` (the plugin contract) knows ``util``, and so on up to the command line
and the conformance kit. Subpackages of equal rank do not import each other. The package facade
``lmgc_core`` and the old flat module paths (``lmgc_core._moved``) are for users, never for lmgc's
own modules. Plugins sit beside the core's top and may use every layer below the command line.
"""

from __future__ import annotations

from lmgc_core._moved import MOVED
from tests.architecture.test_import_cycles import ROOT, _roots, import_graph, modules

RANK = {
    "util": 0,
    "components": 1,
    "stream": 2,
    "lm": 2,
    "coding": 3,
    "files": 4,
    "codecs": 4,
    "cli": 5,
    "safetensors": 5,
    "integrations": 6,
    "testing": 6,
}
"""Subpackage of lmgc_core -> its layer; a module may import lower layers and its own package."""
PLUGIN_RANK = 5
"""Plugins are below ``cli``: a prior or a stage never drives the command line."""
FACADE = {"lmgc_core", "lmgc_core.__main__", "lmgc_core._moved"}


def package_of(module: str) -> str | None:
    """The layer's subpackage of a core module; None for the facade and the old flat paths."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lmgc_core" and len(parts) > 1 and parts[1] in RANK else None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that reaches up, sideways, into the facade or through an old path."""
    found = []
    for module, targets in sorted(graph.items()):
        if module in FACADE:
            continue
        own = package_of(module)
        rank = RANK[own] if own is not None else PLUGIN_RANK
        for target in sorted(targets):
            if not target.startswith("lmgc_core"):
                continue
            theirs = package_of(target)
            if theirs is None:
                found.append(f"{module} -> {target} (the facade or an old path)")
            elif theirs != own and RANK[theirs] >= rank:
                found.append(f"{module} -> {target} (layer {RANK[theirs]} from layer {rank})")
    return found


def test_every_core_module_lives_in_a_subpackage_with_a_docstring():
    core = ROOT / "lmgc_core"
    loose = sorted(p.name for p in core.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "_moved.py"]
    packages = sorted(p.name for p in core.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(RANK)
    for name in packages:
        text = (core / name / "__init__.py").read_text()
        assert text.lstrip().startswith('"""'), f"lmgc_core/{name}/__init__.py states no job"


def test_no_module_imports_a_higher_layer_or_an_old_path():
    found = modules(_roots())
    # the old flat paths as nodes of their own, so that importing one is an edge to it
    old = {f"lmgc_core.{name}": ROOT / "lmgc_core" / "_moved.py" for name in MOVED}
    graph = import_graph({**old, **found})
    assert len(graph) > 60  # the whole tree was read
    assert violations(graph) == []


def test_a_reach_upwards_is_found():
    graph = {
        "lmgc_core.util.errors": {"lmgc_core.coding.pipeline"},
        "lmgc_core.files.archive": {"lmgc_core.codecs.zarr_codec", "lmgc_core.util.errors"},
        "lmgc_core.coding.pipeline": {"lmgc_core", "lmgc_core.coding.engine"},
        "lmgc_float.prior": {"lmgc_core.cli.commands", "lmgc_core.coding.pipeline"},
    }
    assert violations(graph) == [
        "lmgc_core.coding.pipeline -> lmgc_core (the facade or an old path)",
        "lmgc_core.files.archive -> lmgc_core.codecs.zarr_codec (layer 4 from layer 4)",
        "lmgc_core.util.errors -> lmgc_core.coding.pipeline (layer 3 from layer 0)",
        "lmgc_float.prior -> lmgc_core.cli.commands (layer 5 from layer 5)",
    ]
