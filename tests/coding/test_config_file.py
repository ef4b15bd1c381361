"""Pipeline config files: TOML on every supported Python (``tomllib`` from 3.11, ``tomli`` on
3.10, where ``--config sp.toml`` said 'not valid toml: No module named tomllib')."""

from __future__ import annotations

import sys

import pytest

from lmgc_core.coding.config_file import load_config
from lmgc_core.util.errors import ConfigError

TOML = "[prior]\nname = 'float'\nlevel = 2\n"


def test_toml_reads_through_tomli_where_python_has_no_tomllib(tmp_path, monkeypatch):
    tomllib = pytest.importorskip("tomllib")
    (tmp_path / "sp.toml").write_text(TOML)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # Python 3.10
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the same parser, as a package
    assert load_config(tmp_path / "sp.toml")["prior"] == {"name": "float", "level": 2}


def test_toml_without_a_parser_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "sp.toml").write_text(TOML)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ConfigError, match=r"need Python 3.11 or the tomli package") as info:
        load_config(tmp_path / "sp.toml")
    assert "not valid" not in str(info.value)
