"""Configs from someone else are bounded (issue 19): YAML anchors/aliases are refused (a 50 KB
alias bomb expanded to 100 M integers, 4.8 GB and 48 s), and so are configurations or option
values over the value and nesting caps, wherever they come from (a file, ``-P``, ``--stage``)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lmgc_core.coding.config_file import MAX_DEPTH, MAX_VALUES
from tests.cli_helpers import lmgc, one_error_line
from tests.rss_helpers import run_lmgc


@pytest.fixture
def g(tmp_path):
    np.save(tmp_path / "g.npy", np.arange(64, dtype=np.float32))
    return tmp_path / "g.npy"


def _alias_bomb() -> str:
    """~50 KB of YAML whose ``layout`` expands to 10^8 integers through nested aliases."""
    lines = ["l0: &l0 [" + ", ".join(["7"] * 10) + "]"]
    for k in range(1, 8):
        lines.append(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 10) + "]")
    lines.append("pipeline:")
    lines.append("  prior: {name: float, layout: *l7}")
    pad = "# " + "x" * 78
    return "\n".join(lines + [pad] * 600) + "\n"


def test_the_alias_bomb_is_refused_fast_in_little_memory(tmp_path, g):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb())
    assert 45_000 < config.stat().st_size < 55_000
    start = time.monotonic()
    status, err, rss = run_lmgc("compress", g, "-o", tmp_path / "x.lmgc", "--config", config)
    wall = time.monotonic() - start
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert "line 1: YAML anchor &l0 refused" in lines[0] and "bomb.yaml" in lines[0]
    assert rss < 150, f"peak RSS {rss:.0f} MiB"
    assert wall < 10, f"{wall:.1f} s (the refusal itself is instant; this is start-up)"
    assert not (tmp_path / "x.lmgc").exists()


def test_a_mix_of_5000_aliased_experts_is_refused(tmp_path, g):
    experts = ", ".join(["*e"] * 5000)
    config = tmp_path / "mix.yaml"
    config.write_text(
        f"expert: &e {{name: float}}\npipeline:\n  prior: {{name: mix, experts: [{experts}]}}\n"
    )
    message = one_error_line(lmgc("compress", g, "--config", config, ok=False), 2)
    assert "anchor &e refused" in message


def test_an_alias_alone_names_its_line(tmp_path, g):
    """An alias without its anchor (the anchor is what the check sees first otherwise)."""
    config = tmp_path / "alias.yaml"
    config.write_text("pipeline:\n  prior: float\n  window: *nowhere\n")
    message = one_error_line(lmgc("compress", g, "--config", config, ok=False), 2)
    assert "line 3: YAML alias *nowhere refused" in message


def test_plain_yaml_configs_still_load(tmp_path, g):
    config = tmp_path / "ok.yaml"
    config.write_text("pipeline:\n  prior: {name: float, block_values: 4096}\n")
    lmgc("compress", g, "--config", config, "-o", tmp_path / "ok.lmgc")
    assert '"block_values": 4096' in lmgc("info", "--json", tmp_path / "ok.lmgc").stdout


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_too_many_values_in_a_config_file(tmp_path, g, suffix):
    layout = list(range(MAX_VALUES + 10))
    config = tmp_path / f"big{suffix}"
    if suffix == ".toml":
        config.write_text("[prior]\nname = 'float'\nlayout = " + json.dumps(layout) + "\n")
    else:  # JSON is YAML too
        config.write_text(json.dumps({"prior": {"name": "float", "layout": layout}}))
    message = one_error_line(lmgc("compress", g, "--config", config, ok=False), 2)
    assert f"over {MAX_VALUES} values" in message and config.name in message


def test_too_deep_a_config_file(tmp_path, g):
    config = tmp_path / "deep.json"
    config.write_text(json.dumps({"prior": _nested(MAX_DEPTH + 5)}))
    message = one_error_line(lmgc("compress", g, "--config", config, ok=False), 2)
    assert f"deeper than {MAX_DEPTH}" in message


def _nested(depth: int) -> dict:
    layout: list = [1]
    for _ in range(depth):
        layout = [layout]
    return {"name": "float", "layout": layout}


def test_command_line_options_have_the_same_caps(tmp_path, g):
    big = json.dumps(list(range(MAX_VALUES + 10)))
    message = one_error_line(lmgc("compress", g, "-P", f"layout={big}", ok=False), 2)
    assert f"over {MAX_VALUES} values" in message
    deep = json.dumps(_nested(MAX_DEPTH + 5)["layout"])
    message = one_error_line(lmgc("compress", g, "-P", f"layout={deep}", ok=False), 2)
    assert f"deeper than {MAX_DEPTH}" in message
    stage = json.dumps({"name": "quantize", "bits": 8, "junk": list(range(MAX_VALUES + 10))})
    message = one_error_line(lmgc("compress", g, "--stage", stage, ok=False), 2)
    assert f"over {MAX_VALUES} values" in message


@pytest.mark.parametrize(
    "option",
    [("--stage", '{"name": "quantize", "bits": 8, "bits": 4}'),
     ("-P", 'layout={"a": [[4]], "a": [[8]]}'), ("-S", 'byte_order={"x": 1, "x": 2}')],
)  # fmt: skip
def test_a_key_given_twice_in_an_options_json_is_refused(tmp_path, g, option):
    """As in a config file: json.loads kept the last value, so ``bits: 4`` was coded, exit 0."""
    message = one_error_line(lmgc("compress", g, *option, ok=False), 2)
    assert "is given twice" in message


def test_mix_refuses_thousands_of_experts_before_building_them():
    from lmgc_mix.prior import MAX_EXPERTS

    from lmgc_core.coding.pipeline import Pipeline
    from lmgc_core.util.errors import ConfigError

    experts = [{"name": "adaptive"}] * 5000  # written out, no YAML aliases: under the value cap
    with pytest.raises(ConfigError, match=f"at most {MAX_EXPERTS} experts"):
        Pipeline.from_config({"prior": {"name": "mix", "experts": experts}})


def test_a_pipeline_config_from_python_or_zarr_metadata_meets_the_caps():
    """Not only config files: a dict handed to Pipeline.from_config (the numcodecs codec's
    from_config reads Zarr metadata someone else wrote) is refused past the value cap."""
    from lmgc_core.coding.config_file import MAX_VALUES
    from lmgc_core.coding.pipeline import Pipeline
    from lmgc_core.util.errors import ConfigError

    layout = [[1]] * (MAX_VALUES // 2 + 1)
    with pytest.raises(ConfigError, match="pipeline configuration holds over"):
        Pipeline.from_config({"prior": {"name": "float", "layout": layout}})


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("pipeline: 5\n", "'pipeline' must hold a mapping"),
        ("pipeline:\n", "'pipeline' must hold a mapping"),
        ("pipeline: {prior: adaptive}\nwindow: 5\n", "'window' beside 'pipeline'"),
        ("pipeline: {prior: adaptive}\nbogus: 1\n", "'bogus' beside 'pipeline'"),
        ("prior: 5\n", "prior must be a name or a mapping"),
        ("serializer: [hex]\n", "serializer must be a name or a mapping"),
    ],
)
def test_config_files_of_the_wrong_shape_are_one_clear_error(tmp_path, g, text, said):
    """Each was a Python exception (AttributeError, TypeError) with exit 1, or, for a pipeline
    key beside ``pipeline:``, silently ignored."""
    (tmp_path / "c.yaml").write_text(text)
    message = one_error_line(lmgc("compress", g, "--config", tmp_path / "c.yaml", ok=False), 2)
    assert said in message


def test_stages_that_are_not_a_list_and_deep_options_are_one_clear_error(tmp_path, g):
    (tmp_path / "c.yaml").write_text("pipeline: {stages: quantize}\n")
    args = ("compress", g, "--config", tmp_path / "c.yaml", "--stage", "sparsify")
    assert "stages must be a list" in one_error_line(lmgc(*args, ok=False), 2)
    deep = "[" * 5000 + "]" * 5000  # past json's recursion limit, not only MAX_DEPTH
    message = one_error_line(lmgc("compress", g, "-P", f"layout={deep}", ok=False), 2)
    assert "nested too deeply" in message and len(message) < 200
    stage = '{"name": "quantize", "x": ' + deep + "}"
    message = one_error_line(lmgc("compress", g, "--stage", stage, ok=False), 2)
    assert "not valid JSON" in message and len(message) < 300


def test_a_pipeline_chains_at_most_max_stages():
    """Each stage's inverse runs over the whole array (a random-k sparsify regenerates its
    positions): a 1.9 KB header chaining 200 of them decoded for 45 s, 8,000 for ~30 min, before
    the checksum failed. A config over the cap is refused, and so is a header resealed with one."""
    from lmgc_core import Pipeline, decompress
    from lmgc_core.coding.pipeline import MAX_STAGES
    from lmgc_core.stream import container
    from lmgc_core.util.errors import ConfigError, StreamError

    stage = {"name": "sparsify", "keep": 0.5, "method": "random"}
    x = np.linspace(-1, 1, 256, dtype=np.float32)
    most = Pipeline.from_config({"stages": [stage] * MAX_STAGES, "prior": "adaptive"})
    blob = most.compress(x)
    assert decompress(blob).tobytes() == most.reconstruct(x).tobytes()
    with pytest.raises(ConfigError, match=f"at most {MAX_STAGES}"):
        Pipeline.from_config({"stages": [stage] * (MAX_STAGES + 1)})
    header, offset = container.read_header(blob)
    header["pipeline"]["stages"].append(header["pipeline"]["stages"][-1])
    header["stages"].append(header["stages"][-1])
    with pytest.raises(StreamError, match=f"at most {MAX_STAGES}"):
        decompress(container.pack(header, []) + blob[offset:])
