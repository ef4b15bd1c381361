"""ComponentSpec: the one reader of a component spec (a name or ``{"name": ..., **options}``)."""

from __future__ import annotations

import pytest

from lmgc_core.components.spec import ComponentSpec, spec_dict, spec_name
from lmgc_core.util.errors import ConfigError


def test_a_name_and_a_mapping_give_the_same_spec() -> None:
    assert ComponentSpec.parse("hex") == ComponentSpec("hex", {})
    spec = ComponentSpec.parse({"name": "float", "level": 1})
    assert (spec.name, spec.options) == ("float", {"level": 1})
    assert spec.to_dict() == {"name": "float", "level": 1}


@pytest.mark.parametrize("bad", [None, 3, {"level": 1}, {"name": 7}, ["float"]])
def test_a_malformed_spec_is_a_config_error_naming_the_role(bad: object) -> None:
    with pytest.raises(ConfigError, match="prior must be a name or a mapping with a 'name'"):
        ComponentSpec.parse(bad, "prior")


def test_parse_copies_the_options() -> None:
    value = {"name": "float", "level": 1}
    ComponentSpec.parse(value).options["level"] = 2
    assert value == {"name": "float", "level": 1}


def test_a_built_component_round_trips_through_its_spec() -> None:
    prior = ComponentSpec.parse({"name": "float", "level": 1}).build("prior")
    assert prior.name == "float" and prior.level == 1
    again = ComponentSpec.of(prior)
    assert again.name == "float" and again.options == prior.get_config()
    assert again.build("prior").fingerprint() == prior.fingerprint()


def test_lenient_readers_leave_malformed_values_to_the_strict_one() -> None:
    assert spec_dict("hex") == {"name": "hex"}
    value = {"name": "hex"}
    assert spec_dict(value) == value and spec_dict(value) is not value
    assert spec_dict(3) == 3
    assert spec_name("hex") == "hex" and spec_name({"name": "x", "a": 1}) == "x"
    assert spec_name({"a": 1}) is None and spec_name(None) is None
