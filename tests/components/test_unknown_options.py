"""Unknown component options are refused by type (UnknownOptionError), checked against the
factory's (or a lazy factory's class's) signature before the component is built."""

from __future__ import annotations

import sys
from fractions import Fraction
from typing import Any

import pytest

from lmgc_core.cli.options import build_pipeline
from lmgc_core.components import registry
from lmgc_core.components.factories import checked, lazy, option_names
from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.util.errors import ConfigError, PluginError, UnknownOptionError


def test_an_unknown_option_of_a_class_factory_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownOptionError) as err:
        registry.build("serializer", "hex", {"foo": 1})
    assert (err.value.kind, err.value.name, err.value.unknown) == ("serializer", "hex", ["foo"])
    assert "bytes_per_group" in err.value.valid
    assert "serializer 'hex' has no option 'foo'; valid options: " in str(err.value)


def test_a_lazy_factory_is_checked_against_its_class_before_it_is_called() -> None:
    with pytest.raises(UnknownOptionError) as err:
        registry.build("prior", "float", {"levle": 1})
    assert err.value.unknown == ["levle"] and "level" in err.value.valid
    assert registry.build("prior", "float", {"level": 2}).level == 2


def test_lazy_runs_before_then_imports_and_checks() -> None:
    seen: list[dict[str, object]] = []
    factory = lazy("fractions:Fraction", lambda options: seen.append(dict(options)))
    assert factory(numerator=3, denominator=4) == Fraction(3, 4) and seen == [
        {"numerator": 3, "denominator": 4}
    ]
    with pytest.raises(UnknownOptionError, match="stage 'f' has no option 'num'"):
        checked("stage", "f", factory, {"num": 3})
    assert option_names(factory)[:2] == ["numerator", "denominator"]  # fractions is imported
    unloaded = lazy("lmgc_no_such_module_here:X")
    assert option_names(unloaded) is None and "lmgc_no_such_module_here" not in sys.modules
    with pytest.raises(ValueError, match="module:Class"):
        lazy("fractions.Fraction")
    with pytest.raises(PluginError, match="fractions has no 'Fractoin'"):  # a raw AttributeError
        lazy("fractions:Fractoin")()


class _Plugin:
    """An in-process plugin whose prior raises a TypeError that reads like a bad option."""

    @staticmethod
    def factory(level: int = 1) -> object:
        raise TypeError("Prior.__init__() got an unexpected keyword argument 'level'")

    @hookimpl
    def register_priors(self, register: Any) -> None:
        register("type-error-prior", self.factory)


def test_a_type_error_inside_a_component_is_not_taken_for_an_unknown_option() -> None:
    plugin = _Plugin()
    registry.add_plugin(plugin, label="type-error-plugin 0.0")
    try:
        with pytest.raises(ConfigError, match="bad options for prior") as err:
            registry.build("prior", "type-error-prior", {"level": 2})
        assert not isinstance(err.value, UnknownOptionError)
    finally:
        registry.remove_plugin(plugin)


def test_the_cli_pre_check_and_the_build_raise_the_same_type() -> None:
    with pytest.raises(UnknownOptionError, match="prior 'float' has no option 'nope'"):
        build_pipeline(prior="float", prior_opts=("nope=1",))
    with pytest.raises(UnknownOptionError, match="serializer 'hex' has no option 'foo'"):
        build_pipeline(serializer="hex", serializer_opts=("foo=1",))
