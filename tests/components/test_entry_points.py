"""The entry-point reader gives what ``importlib.metadata`` gives, on real installed metadata and
on search paths built to hit its corners (shadowed distributions, egg-info, comments, extras,
attribute paths), and hands zipped entries over to ``importlib.metadata``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lmgc_core.components import entry_points as ep_reader

GROUP = "lmgc_test_group"


def as_tuples(eps: list[ep_reader.EntryPoint]) -> list[tuple[str, str, str, str]]:
    return [(e.name, e.value, e.dist_name, e.dist_version) for e in eps]


def standard(group: str) -> list[tuple[str, str, str, str]]:
    """What ``importlib.metadata`` finds, with each distribution's name and version."""
    import importlib.metadata

    out = []
    for ep in importlib.metadata.entry_points(group=group):
        meta = ep.dist.metadata
        out.append((ep.name, ep.value, meta["Name"], meta["Version"]))
    return out


def dist_info(root: Path, folder: str, name: str, version: str, entry_points: str) -> Path:
    info = root / folder
    info.mkdir(parents=True)
    metadata = "METADATA" if folder.endswith(".dist-info") else "PKG-INFO"
    (info / metadata).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a: b\n\n"
        "Name: not-this-one\n"  # the description, after the headers, is not read
    )
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)
    return info


@pytest.fixture
def search_path(tmp_path, monkeypatch):
    """Two site folders on ``sys.path``, the first one shadowing a distribution of the second."""
    first, second = tmp_path / "first", tmp_path / "second"
    dist_info(
        first,
        "Alpha_Plugin-1.0.dist-info",
        "Alpha_Plugin",
        "1.0",
        f"# a comment\n[console_scripts]\nalpha = alpha:main\n\n[{GROUP}]\n"
        f"one = alpha_mod\n  # another comment\ntwo=alpha_mod.sub:attr.inner [extra]\n",
    )
    dist_info(first, "beta-2.0.egg-info", "beta", "2.0", f"[{GROUP}]\nbeta = beta_mod:thing\n")
    dist_info(first, "nothing-0.1.dist-info", "nothing", "0.1", "")
    # shadowed by first/Alpha_Plugin: same normalized name, later on the path
    dist_info(
        second, "alpha.plugin-9.9.dist-info", "alpha.plugin", "9.9", f"[{GROUP}]\nold = old\n"
    )
    dist_info(
        second,
        "gamma-3.0.dist-info",
        "gamma",
        "3.0",
        f"[{GROUP}]\ng = gamma_mod\n[ {GROUP} ]\nspaced = not_in_the_group\n",
    )
    monkeypatch.setattr(sys, "path", [str(first), str(tmp_path / "missing"), str(second)])
    # Only path-based finders find distributions: an earlier test may have added a finder of
    # its own, which test_a_finder_of_its_own_... is about.
    path_only = [
        f for f in sys.meta_path if ep_reader.path_based(f) or not hasattr(f, "find_distributions")
    ]
    monkeypatch.setattr(sys, "meta_path", path_only)
    importlib.invalidate_caches()
    return tmp_path


def test_installed_lmgc_plugins_match_importlib_metadata():
    found = ep_reader.entry_points("lmgc")
    assert as_tuples(found) == standard("lmgc")
    assert {e.value for e in found} >= {"lmgc_float", "lmgc_range_coder", "lmgc_serializers"}


def test_corner_cases_match_importlib_metadata(search_path):
    assert not ep_reader._needs_importlib()
    found = as_tuples(ep_reader.entry_points(GROUP))
    assert found == standard(GROUP)
    assert ("old", "old", "alpha.plugin", "9.9") not in found  # shadowed
    assert ("two", "alpha_mod.sub:attr.inner [extra]", "Alpha_Plugin", "1.0") in found
    assert ("g", "gamma_mod", "gamma", "3.0") in found


def test_a_zipped_entry_is_left_to_importlib_metadata(search_path, monkeypatch):
    archive = search_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("delta-4.0.dist-info/METADATA", "Name: delta\nVersion: 4.0\n\n")
        zf.writestr("delta-4.0.dist-info/entry_points.txt", f"[{GROUP}]\nd = delta_mod\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(archive)])
    assert ep_reader._needs_importlib()
    found = as_tuples(ep_reader.entry_points(GROUP))
    assert found == standard(GROUP)
    assert ("d", "delta_mod", "delta", "4.0") in found


def test_a_finder_of_its_own_is_left_to_importlib_metadata(search_path, monkeypatch):
    import importlib.metadata

    elsewhere = dist_info(
        search_path / "elsewhere", "epsilon-5.0.dist-info", "epsilon", "5.0", f"[{GROUP}]\ne = e\n"
    )

    class OwnFinder:
        """An import hook that finds one distribution outside ``sys.path``."""

        @staticmethod
        def find_spec(*args: object) -> None:
            return None

        @staticmethod
        def find_distributions(context: object = None) -> list[importlib.metadata.Distribution]:
            return [importlib.metadata.PathDistribution(elsewhere)]

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, OwnFinder])
    assert ep_reader._needs_importlib()
    found = as_tuples(ep_reader.entry_points(GROUP))
    assert found == standard(GROUP)
    assert ("e", "e", "epsilon", "5.0") in found


def test_with_the_importlib_metadata_backport_it_still_reads_the_files():
    """zarr and dask import the backport, which takes over finding distributions on
    ``sys.path``: same folders, so no need to hand over to importlib.metadata."""
    pytest.importorskip("importlib_metadata")  # installed with zarr; without it, no such case
    code = (
        "import sys, importlib_metadata; from lmgc_core import entry_points as e; "
        "print(e._needs_importlib(), len(e.entry_points('lmgc')) > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_load_walks_the_attribute_path(tmp_path, monkeypatch):
    (tmp_path / "ep_target_mod.py").write_text(
        "class Outer:\n    class Inner:\n        value = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = ep_reader.EntryPoint("x", "ep_target_mod:Outer.Inner [extra]", GROUP)
    assert point.load().value == 42
    for value in ("ep_target_mod", "ep_target_mod [extra]"):
        assert ep_reader.EntryPoint("m", value, GROUP).load().__name__ == "ep_target_mod"


def test_the_cli_does_not_import_importlib_metadata():
    """Its import costs every command 40-60 ms on the test machine (email, csv, textwrap)."""
    code = (
        "import sys; from lmgc_core import registry; registry.registrations(); "
        "print('importlib.metadata' in sys.modules, 'email' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
