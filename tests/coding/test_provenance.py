"""Streams record which plugin versions made them; decode failures of intact streams say so."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from lmgc_core import ConfigError, MismatchError, Pipeline, StreamError, decompress, read_header
from lmgc_core.cli.commands import cli
from lmgc_core.stream import container
from lmgc_core.util.errors import TruncatedStreamError
from tests.conftest import same_bits


@pytest.fixture(scope="module")
def made(grads):
    data = grads[:400]
    return data, Pipeline.from_config({"prior": "adaptive", "window": 64, "batch": 4}).compress(
        data
    )


def _rewrite(blob: bytes, edit_header=None, edit_blocks=None) -> bytes:
    """A stream with an edited header or payload whose CRCs are made valid again: an intact
    container whose contents the components disagree with."""
    box = container.unpack(blob)
    header, blocks = box.header, list(box.blocks)
    if edit_blocks:
        blocks = edit_blocks(blocks)
        sizes = iter(blocks)
        for part in header["parts"]:
            for entry in part["blocks"]:
                block = next(sizes)
                entry[:] = [len(block), __import__("zlib").crc32(block)]
    if edit_header:
        edit_header(header)
    return container.pack(header, blocks)


def _flip(blocks):
    first = bytearray(blocks[0])
    first[len(first) // 2] ^= 0x5A
    return [bytes(first), *blocks[1:]]


def test_header_records_the_plugin_distribution(made):
    _, blob = made
    assert read_header(blob)["made_by"] == "lmgc 0.1.0"


def test_intact_stream_that_fails_to_decode_names_components_and_versions(made):
    _, blob = made
    with pytest.raises(StreamError) as err:
        decompress(_rewrite(blob, edit_blocks=_flip))
    text = str(err.value)
    assert "the stream was made with serializer 'hex' (lmgc 0.1.0), prior 'adaptive' (lmgc " in text
    assert "this decoder uses serializer 'hex' (lmgc 0.1.0)" in text
    assert "same versions: a component is not deterministic" in text


def test_other_version_is_named(made):
    _, blob = made

    def older(header):
        header["made_by"] = {
            "serializer": "lmgc 0.1.0",
            "prior": "lmgc 0.0.9",
            "coder": "lmgc 0.1.0",
            "stages": [],
        }

    with pytest.raises(StreamError, match=r"prior 'adaptive': lmgc 0.0.9 made it, lmgc 0.1.0 dec"):
        decompress(_rewrite(blob, edit_header=older, edit_blocks=_flip))


def test_streams_without_a_record_still_decode_and_explain(made):
    data, blob = made
    old = _rewrite(blob, edit_header=lambda h: h.pop("made_by"))
    assert same_bits(decompress(old), data)
    with pytest.raises(StreamError, match=r"plugin versions not recorded"):
        decompress(_rewrite(old, edit_blocks=_flip))


def test_fingerprint_mismatch_is_explained_too(made):
    _, blob = made
    other = _rewrite(blob, edit_header=lambda h: h["prior"].update(version=99))
    with pytest.raises(MismatchError, match=r"version: stream has 99.*the stream was made with"):
        decompress(other)
    with pytest.raises(MismatchError) as err:  # it names what differs: no other cause guessed
        decompress(other)
    assert "not deterministic" not in str(err.value)


def test_corruption_of_the_container_is_not_blamed_on_plugins(made):
    _, blob = made
    damaged = bytearray(blob)
    damaged[-5] ^= 1  # a block byte: its CRC no longer matches
    for bad in (bytes(damaged), blob[:-3]):
        with pytest.raises(StreamError) as err:
            decompress(bad)
        assert "made with" not in str(err.value)
    with pytest.raises(TruncatedStreamError):
        decompress(blob[:-3])


def test_compress_refuses_a_config_that_does_not_rebuild_the_component():
    """Checked before anything is written: decoding has only the recorded config."""
    pipe = Pipeline.from_config({})
    config = pipe.serializer.get_config()
    pipe.serializer.get_config = lambda: {**config, "extra": [1, 2]}
    with pytest.raises(ConfigError, match=r"serializer 'hex' has no option 'extra'"):
        pipe.compress(np.float32([1, 2]))


class _ScaleStage:
    """A stage whose inverse needs an option its get_config() leaves out (a plugin's bug)."""

    @staticmethod
    def make(forget: bool) -> type:
        from lmgc_core.components.interfaces import Stage

        class Scale(Stage):
            name = "scale-probe"
            lossless = False

            def __init__(self, factor: float = 2.0) -> None:
                self.factor = float(factor)

            def get_config(self) -> dict:
                return {} if forget else {"factor": self.factor}

            def forward(self, parts):
                f = np.float32(self.factor)
                return {k: (v * f).astype(v.dtype) for k, v in parts.items()}, {}

            def inverse(self, parts, state):
                f = np.float32(self.factor)
                return {k: (v / f).astype(v.dtype) for k, v in parts.items()}

        return Scale


@pytest.mark.parametrize("forget", [True, False])
def test_compress_refuses_a_stage_whose_config_does_not_rebuild_its_inverse(forget):
    """Stages have no fingerprint: such a stream was written with exit 0 and failed its
    SHA-256 on every decode. A probe through both pipelines' stages finds it first."""
    import types

    from lmgc_core.components.hookspecs import hookimpl
    from lmgc_core.components.registry import add_plugin, remove_plugin

    plugin = types.ModuleType("scale_probe_plugin")
    cls = _ScaleStage.make(forget)
    plugin.register_stages = hookimpl(lambda register: register("scale-probe", cls))
    add_plugin(plugin)
    try:
        pipe = Pipeline.from_config({"stages": [{"name": "scale-probe", "factor": 3.0}]})
        x = np.float32([0.1, 0.2, 0.3, 1e-3] * 64)
        if forget:
            with pytest.raises(ConfigError, match="missing from a stage's get_config"):
                pipe.compress(x)
        else:
            assert same_bits(decompress(pipe.compress(x)), pipe.reconstruct(x))
    finally:
        remove_plugin(plugin)


# ---------------------------------------------------------------------------- CLI --stage


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_stage_option_forms_match_a_config_file(tmp_path, grads):
    x = tmp_path / "x.npy"
    np.save(x, grads[:300])
    stages = [{"name": "sparsify", "keep": 0.25}, {"name": "quantize", "bits": 6}]
    (tmp_path / "c.json").write_text(json.dumps({"stages": stages}))
    (tmp_path / "one.json").write_text(json.dumps({"stages": stages[:1]}))
    runs = {
        "config": ["--config", str(tmp_path / "c.json")],
        "short": ["--stage", "sparsify:keep=0.25", "--stage", "quantize:bits=6"],
        "json": ["--stage", json.dumps(stages[0]), "--stage", json.dumps(stages[1])],
        "appended": ["--config", str(tmp_path / "one.json"), "--stage", "quantize:bits=6"],
    }
    blobs = {}
    for label, args in runs.items():
        out = tmp_path / f"{label}.lmgc"
        code, text = _run("compress", str(x), "-o", str(out), *args)
        assert code == 0, text
        blobs[label] = out.read_bytes()
    assert len(set(blobs.values())) == 1
    with zipfile.ZipFile(io.BytesIO(blobs["short"])) as archive:  # the CLI writes an archive
        stream = archive.read(next(n for n in archive.namelist() if n.endswith(".lmgc")))
    assert read_header(stream)["pipeline"]["stages"][1] == {"name": "quantize", "bits": 6}
    code, text = _run("estimate", str(x), "--stage", "quantize:bits=4")
    assert code == 0 and "ideal" in text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (":bits=4", "--stage is NAME[:KEY=VALUE,...] or a JSON object"),
        ("quantize:bits", "options are KEY=VALUE"),
        ('{"bits": 4}', "must be a JSON object with a 'name'"),
        ("{nope", "is not valid JSON"),
        ("nosuchstage", "unknown stage 'nosuchstage'"),
    ],
)
def test_bad_stage_options_fail_in_one_line(tmp_path, value, message):
    np.save(tmp_path / "x.npy", np.float32([1, 2, 3]))
    code, text = _run("compress", str(tmp_path / "x.npy"), "--stage", value)
    assert code == 2 and message in text, text  # a usage error


def test_hand_built_unregistered_components_still_compress():
    """Only registered components can be rebuilt from a config; a hand-built pipeline of an
    unregistered class is not replay-checked, and its own object decodes its streams."""
    from lmgc_basic_priors.uniform import UniformPrior

    class Private(UniformPrior):
        name = "private-unregistered"

    base = Pipeline.from_config({})
    pipe = Pipeline(base.serializer, Private(), base.coder)
    data = np.float32([1.5, -2, 0])
    blob = pipe.compress(data)
    assert read_header(blob)["made_by"]["prior"] == "not registered"
    assert same_bits(pipe.decompress(blob), data)


def _stage_plugin(cls: type):
    import types

    from lmgc_core.components.hookspecs import hookimpl

    plugin = types.ModuleType(f"{cls.name}_plugin")
    plugin.register_stages = hookimpl(lambda register: register(cls.name, cls))
    return plugin


def test_stages_are_checked_as_decoding_will_see_them():
    """A stage claiming ``lossless`` whose inverse is not (through float16) made the CLI say
    "identical to the source" of other bytes, exit 0; a stage whose state holds a tuple wrote
    streams that failed their checksum (the header gives the state back as a list)."""
    from lmgc_core.components.interfaces import Stage
    from lmgc_core.components.registry import add_plugin, remove_plugin
    from lmgc_core.util.errors import PluginError

    class Optionless(Stage):
        lossless = True

        def get_config(self):
            return {}

    class HalfClaim(Optionless):
        name = "half-claim"

        def forward(self, parts):
            return {k: v.astype(np.float16) for k, v in parts.items()}, {}

        def inverse(self, parts, state):
            return {k: v.astype(np.float32) for k, v in parts.items()}

    class TupleState(Optionless):
        name = "tuple-state"

        def forward(self, parts):
            return dict(parts), {"shape": (1, 2)}

        def inverse(self, parts, state):
            assert isinstance(state["shape"], list)  # as the header gives it back
            return dict(parts)

    plugins = [_stage_plugin(cls) for cls in (HalfClaim, TupleState)]
    for plugin in plugins:
        add_plugin(plugin)
    try:
        x = np.float32([0.1, 0.2, 0.3, 1e-3] * 64)
        with pytest.raises(PluginError, match=r"'half-claim'.* lossless.*does not rebuild"):
            Pipeline.from_config({"stages": ["half-claim"]}).compress(x)
        blob = Pipeline.from_config({"stages": ["tuple-state"]}).compress(x)
        assert same_bits(decompress(blob), x)
    finally:
        for plugin in plugins:
            remove_plugin(plugin)


def test_a_fingerprint_holding_a_tuple_decodes():
    """The header holds the fingerprint as JSON, where a tuple is a list: every stream of a
    prior whose fingerprint held ``sys.version_info[:2]`` was refused ("stream has [3, 11],
    this prior has (3, 11)")."""
    import types

    from lmgc_basic_priors.adaptive import AdaptivePrior

    from lmgc_core.components.hookspecs import hookimpl
    from lmgc_core.components.registry import add_plugin, remove_plugin

    class Tupled(AdaptivePrior):
        name = "tupled"

        def fingerprint(self):
            return {**super().fingerprint(), "python": (3, 11)}

    plugin = types.ModuleType("tupled_plugin")
    plugin.register_priors = hookimpl(lambda register: register("tupled", Tupled))
    add_plugin(plugin)
    try:
        x = np.float32([0.1, -2.5, 3e-3, 7.0] * 64)  # coded, not stored: the prior decodes
        assert same_bits(decompress(Pipeline.from_config({"prior": "tupled"}).compress(x)), x)
    finally:
        remove_plugin(plugin)


def test_a_stream_of_a_plugin_not_installed_names_the_one_to_install():
    """'unknown prior' only listed the installed ones, though the header's made_by names the
    distribution that made it."""
    import types

    from lmgc_basic_priors.adaptive import AdaptivePrior

    from lmgc_core.components.hookspecs import hookimpl
    from lmgc_core.components.registry import add_plugin, remove_plugin
    from lmgc_core.util.errors import UnknownComponentError

    class Mine(AdaptivePrior):
        name = "mine"

    plugin = types.ModuleType("mine_plugin")
    plugin.register_priors = hookimpl(lambda register: register("mine", Mine))
    add_plugin(plugin)
    try:
        blob = Pipeline.from_config({"prior": "mine"}).compress(np.float32([0.1, 2, 3, 4] * 64))
    finally:
        remove_plugin(plugin)
    with pytest.raises(UnknownComponentError, match="made with prior 'mine' from mine_plugin"):
        decompress(blob)


def test_a_refused_adaptive_version_2_stream_names_its_numpy_dependence():
    """Under numpy 1.x such a stream fails its checksum; the explanation blamed a component
    that is not deterministic, or an altered stream, instead of the documented cause."""
    from lmgc_core.coding.provenance import explain
    from tests.paths import TESTS_DIR

    blob = (TESTS_DIR / "fixtures" / "stream-v1-early" / "adaptive-hex-range.lmgc").read_bytes()
    header = read_header(blob)
    assert "numpy's log and exp" in explain(header, Pipeline.from_config(header["pipeline"]))
    header["prior"]["version"] = 3
    assert "numpy" not in explain(header, Pipeline.from_config(header["pipeline"]))
