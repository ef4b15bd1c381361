"""The flat module paths of lmgc before its subpackages still import, as the same modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lmgc_core._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_is_the_module_at_its_new_home(old):
    module = importlib.import_module(f"lmgc_core.{old}")
    assert module is importlib.import_module(f"lmgc_core.{MOVED[old]}")
    assert module.__spec__.name == f"lmgc_core.{MOVED[old]}"  # the alias left its spec alone


def test_documented_imports_of_the_old_layout_work_in_a_fresh_process():
    code = (
        "from lmgc_core.errors import LMGCError\n"
        "from lmgc_core.hookspecs import hookimpl\n"
        "from lmgc_core.interfaces import Prior\n"
        "from lmgc_core.numcodecs_codec import LMGC\n"
        "from lmgc_core.cli import main\n"
        "import lmgc_core, lmgc_core.util.errors as e\n"
        "assert lmgc_core.errors is e and LMGCError is e.LMGCError\n"
        "assert lmgc_core.registry.add_plugin\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_unknown_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lmgc_core.no_such_module")
