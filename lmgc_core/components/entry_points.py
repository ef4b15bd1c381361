"""The entry points of one group, read from the installed distributions' own files.

Every ``lmgc`` command discovers its plugins at start. ``importlib.metadata`` would cost it
40-60 ms on this project's test machine: importing it pulls in ``email``, ``csv`` and
``textwrap``, and it then indexes every installed distribution. That is time no ``--jobs``
setting can share out.

So this module reads the same files the same way: for each ``sys.path`` entry in order, the
``*.dist-info`` / ``*.egg-info`` folders it lists (in ``os.listdir`` order), the first
distribution of a (normalized) name wins, and its ``entry_points.txt`` gives the entry points.
Name and version come from the distribution's ``METADATA`` (``PKG-INFO`` for egg-info), read only
for distributions that have an entry point in the group.

Where the layout is not that simple - a ``sys.path`` entry that is a zip file or an ``.egg``
folder, or a ``sys.meta_path`` finder of its own that finds distributions - :func:`entry_points`
hands the whole question to ``importlib.metadata``, so the answer is always the standard one.
``tests/components/test_entry_points.py`` checks that both agree.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from functools import reduce
from importlib.machinery import PathFinder
from typing import Any, NamedTuple

_INFO_SUFFIXES = (".dist-info", ".egg-info")
_METADATA_FILES = {".dist-info": "METADATA", ".egg-info": "PKG-INFO"}


class EntryPoint(NamedTuple):
    """The part of ``importlib.metadata.EntryPoint`` the registry uses. (A named tuple: a frozen
    dataclass takes ~1 ms to create at import, on every command.)"""

    name: str
    value: str
    group: str
    dist_name: str = ""
    dist_version: str = ""

    def load(self) -> Any:
        """Import the module and walk the attribute path, as ``importlib.metadata`` does."""
        reference = self.value.partition("[")[0]  # extras do not change what is loaded
        module, _, attrs = reference.partition(":")
        target = importlib.import_module(module.strip())
        return reduce(getattr, filter(None, attrs.strip().split(".")), target)


def normalize(name: str) -> str:
    """The key under which ``importlib.metadata`` treats two distributions as one."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def path_based(finder: object) -> bool:
    """The standard path finder, or the ``importlib_metadata`` backport's finder, which searches
    ``sys.path`` the same way: importing the backport (zarr and dask do) moves the finding of
    distributions from the first to the second."""
    kind = finder if isinstance(finder, type) else type(finder)
    return finder is PathFinder or (
        kind.__module__ == "importlib_metadata" and kind.__name__ == "MetadataPathFinder"
    )


def _needs_importlib() -> bool:
    """A layout this reader does not follow: zipped or egg entries, or another finder."""
    for finder in sys.meta_path:
        if hasattr(finder, "find_distributions") and not path_based(finder):
            return True
    for entry in sys.path:
        if not isinstance(entry, str) or entry.lower().endswith(".egg"):
            return True
        if os.path.isfile(entry):
            return True
    return False


def _info_folders() -> list[str]:
    """Each distribution's metadata folder, first of its normalized name, in search order."""
    seen: set[str] = set()
    found: list[str] = []
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:  # missing or unreadable entries hold no distributions
            continue
        for child in children:
            low = child.lower()
            if not low.endswith(_INFO_SUFFIXES):
                continue
            key = normalize(low.rpartition(".")[0].partition("-")[0])
            if key not in seen:
                seen.add(key)
                found.append(os.path.join(root, child))
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _group_lines(text: str, group: str) -> list[tuple[str, str]]:
    """``name = value`` lines of the ``[group]`` section, parsed as ``importlib.metadata`` does
    (``#`` comments, the section name taken as written between its brackets)."""
    out: list[tuple[str, str]] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section == group:
            name, _, value = line.partition("=")
            out.append((name.strip(), value.strip()))
    return out


def _name_version(folder: str) -> tuple[str, str]:
    suffix = os.path.splitext(folder)[1].lower()
    text = _read(os.path.join(folder, _METADATA_FILES[suffix])) or ""
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        key, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            headers.setdefault(key.strip().lower(), value.strip())
    return headers.get("name", ""), headers.get("version", "")


def _from_importlib(group: str) -> list[EntryPoint]:
    import importlib.metadata

    out = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        meta = dist.metadata if dist is not None else None
        name = (meta["Name"] or "") if meta is not None else ""
        version = (meta["Version"] or "") if meta is not None else ""
        out.append(EntryPoint(ep.name, ep.value, group, name, version))
    return out


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group``, as ``importlib.metadata.entry_points(group=group)`` finds
    them, each with its distribution's name and version."""
    if _needs_importlib():
        return _from_importlib(group)
    out: list[EntryPoint] = []
    for folder in _info_folders():
        text = _read(os.path.join(folder, "entry_points.txt"))
        if not text or f"[{group}]" not in text:
            continue
        lines = _group_lines(text, group)
        if lines:
            name, version = _name_version(folder)
            out += [EntryPoint(n, v, group, name, version) for n, v in lines]
    return out
