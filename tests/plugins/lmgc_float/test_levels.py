"""Levels (as in zstd): the pipeline key ``level``, the codecs' ``level`` and ``lmgc compress -l``
all select the float prior's level; streams record it in the prior's config and decode at it
without being told. A new pipeline or codec without a level is fast (1) and records it; a
recorded config without one (a header, stored metadata: written when level 2 was the default)
means level 2, forever."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from lmgc_core import Pipeline, decompress, read_header
from lmgc_core.codecs.numcodecs_codec import LMGC
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec
from lmgc_core.components import registry
from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.util.errors import ConfigError
from tests.cli_helpers import lmgc


def _levels(blob: bytes) -> tuple[object, object]:
    """The level a stream records: in its pipeline's prior spec and in the prior's fingerprint
    (absent: the highest, as before levels existed)."""
    header = read_header(blob)
    return header["pipeline"]["prior"].get("level"), header["prior"].get("level")


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


# -- Pipeline ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", ["float", {"name": "float"}, {"name": "float", "level": 1}])
def test_pipeline_level_goes_into_the_prior_and_round_trips(grads, prior):
    pipeline = Pipeline.from_config({"prior": prior, "level": 1})
    config = pipeline.get_config()
    assert "level" not in config  # the prior's own config records it: headers keep their keys
    assert config["prior"]["level"] == 1
    again = Pipeline.from_config(config)
    assert again.get_config() == config and again.prior.level == 1
    blob = pipeline.compress(grads)
    assert _levels(blob) == (1, 1)
    assert bits(decompress(blob)) == bits(grads)  # decoded from the header alone
    # a highest-level pipeline decodes it too, at the level the stream records
    assert bits(Pipeline.from_config({"level": 2}).decompress(blob)) == bits(grads)


def test_the_default_is_level_1_and_streams_record_it(grads):
    default = Pipeline.from_config({})
    assert default.prior.level == 1 and default.get_config()["prior"]["level"] == 1
    blob = default.compress(grads)
    assert _levels(blob) == (1, 1)  # said in the stream: no later default reinterprets it
    assert Pipeline.from_config({"level": 1}).compress(grads) == blob
    assert Pipeline.from_config({"level": None}).compress(grads) == blob
    assert Pipeline.from_config({"prior": "float"}).compress(grads) == blob
    assert bits(decompress(blob)) == bits(grads)


def test_level_2_records_no_level_and_a_recorded_config_without_one_is_level_2(grads):
    high = Pipeline.from_config({"level": 2})
    assert "level" not in high.recorded_config()["prior"]  # headers as before levels existed
    blob = high.compress(grads)  # its config replays (provenance) although it names no level
    # the full config names it: a new config without a level would be level 1
    assert high.get_config()["prior"]["level"] == 2
    assert Pipeline.from_config(high.get_config()).compress(grads) == blob
    assert _levels(blob) == (None, None)
    assert Pipeline.from_config({"prior": {"name": "float", "level": 2}}).compress(grads) == blob
    assert bits(decompress(blob)) == bits(grads)
    assert bits(Pipeline.from_config({}).decompress(blob)) == bits(grads)  # a fast one decodes it
    recorded = read_header(blob)["pipeline"]
    with registry.recorded():  # what decoding and the codecs do with a header's config
        again = Pipeline.from_config(recorded)
    assert again.prior.level == 2 and again.compress(grads) == blob
    assert Pipeline.from_config(recorded).prior.level == 1  # the same dict as a new config


def test_a_recorded_config_reaches_nested_priors(grads):
    """A mixture's float expert recorded without a level is level 2 too (its fallback stream)."""
    config = {"prior": {"name": "mix", "experts": ["float", "adaptive"]}, "serializer": "hex",
              "window": 256}  # fmt: skip
    assert Pipeline.from_config(config).prior.experts[0].level == 1
    with registry.recorded():
        recorded = Pipeline.from_config(config)
        experts = [{"name": "float", "level": 1}, "adaptive"]
        explicit = Pipeline.from_config({**config, "prior": {"name": "mix", "experts": experts}})
    assert recorded.prior.experts[0].level == 2 and explicit.prior.experts[0].level == 1
    assert Pipeline.from_config(config).prior.fallback().level == 1


def test_decompress_rebuilds_a_level_2_header_at_level_2(grads, monkeypatch):
    """``lmgc_core.decompress`` builds the header's pipeline at the recorded level (so a level-2
    stream is not decoded by a level-1 prior that switches)."""
    blob = Pipeline.from_config({"level": 2}).compress(grads)
    built = []
    original = Pipeline.decompress

    def spy(self, *args, **kwargs):
        built.append(self.prior.level)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "decompress", spy)
    assert bits(decompress(blob)) == bits(grads)
    assert built == [2]


@pytest.mark.parametrize("prior", ["adaptive", {"name": "uniform"}])
def test_level_with_a_prior_without_levels_is_a_clear_config_error(prior):
    name = prior if isinstance(prior, str) else prior["name"]
    with pytest.raises(ConfigError) as err:
        Pipeline.from_config({"prior": prior, "level": 1})
    assert str(err.value) == (
        f"level applies to priors with levels (float); prior {name!r} has none"
    )
    Pipeline.from_config({"prior": prior})  # without a level it builds


class _Swallower:
    """A plugin whose lazy factory takes ``**options`` and ignores them (a level included)."""

    @hookimpl
    def register_priors(self, register):
        from lmgc_basic_priors.uniform import UniformPrior

        class Levelless(UniformPrior):
            name = "levelless"

        register("levelless", lambda **options: Levelless())


def test_a_factory_that_ignores_level_is_refused_too():
    plugin = _Swallower()
    registry.add_plugin(plugin, label="levels-test 0.0")
    try:
        Pipeline.from_config({"prior": "levelless"})
        with pytest.raises(ConfigError, match="prior 'levelless' has none"):
            Pipeline.from_config({"prior": "levelless", "level": 1})
    finally:
        registry.remove_plugin(plugin)


def test_bad_or_conflicting_levels_are_config_errors():
    with pytest.raises(ConfigError, match="level must be one of"):
        Pipeline.from_config({"level": 3})
    with pytest.raises(ConfigError, match="conflicts"):
        Pipeline.from_config({"prior": {"name": "float", "level": 2}, "level": 1})


# -- numcodecs and Zarr ----------------------------------------------------------------------------


def test_numcodecs_config_round_trips_the_level(grads):
    codec = LMGC(level=1)
    config = codec.get_config()
    assert config["level"] == 1
    assert LMGC.from_config(config).get_config() == config
    assert numcodecs.get_codec(json.loads(json.dumps(config))) == codec
    blob = codec.encode(grads)
    assert _levels(blob) == (1, 1)
    assert bits(LMGC(level=2).decode(blob)) == bits(grads)


def test_numcodecs_default_is_level_1_and_a_stored_config_without_one_is_level_2(grads):
    new = LMGC()
    assert new.get_config()["level"] == 1  # written into the metadata: it keeps meaning 1
    assert numcodecs.get_codec(new.get_config()) == new
    assert new.encode(grads) == LMGC(level=1).encode(grads)
    stored = {"id": "lmgc", **{k: v for k, v in new.get_config().items() if k != "level"}}
    old = numcodecs.get_codec(stored)  # metadata written when level 2 was the default
    assert old.get_config()["level"] == 2
    blob = old.encode(grads)
    assert _levels(blob) == (None, None) and blob == LMGC(level=2).encode(grads)
    assert "level" not in LMGC(prior="adaptive").get_config()  # a prior without levels
    assert "level" not in LMGC(prior={"name": "float", "level": 2}).get_config()


def test_zarr_codec_config_round_trips_the_level():
    codec = LMGCZarrCodec(level=1)
    data = codec.to_dict()
    assert data["configuration"]["level"] == 1
    assert LMGCZarrCodec.from_dict(json.loads(json.dumps(data))) == codec
    assert LMGCZarrCodec.from_dict(data).to_dict() == data
    assert LMGCZarrCodec() == codec  # the default, said in the metadata
    stored = {k: v for k, v in data["configuration"].items() if k != "level"}
    old = LMGCZarrCodec.from_dict({"name": "lmgc", "configuration": stored})
    assert old == LMGCZarrCodec(level=2) and old.to_dict()["configuration"]["level"] == 2
    assert "level" not in LMGCZarrCodec(prior="adaptive").to_dict()["configuration"]


def test_zarr_store_written_before_the_default_changed_keeps_level_2(tmp_path, grads):
    """A store whose zarr.json names no level (written when level 2 was the default): chunks
    written into it now are level 2 like the old ones, and both read back."""
    real = grads.reshape(64, 128)
    path = tmp_path / "old.zarr"
    z = zarr.create_array(str(path), shape=real.shape, chunks=(32, 128), dtype=real.dtype,
                          serializer=LMGCZarrCodec(level=2), compressors=None)  # fmt: skip
    z[:32] = real[:32]
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["codecs"][0]["configuration"]["level"]
    meta_file.write_text(json.dumps(meta))
    again = zarr.open_array(str(path), mode="r+")
    again[32:] = real[32:]
    chunks = [p for p in sorted((path / "c").rglob("*")) if p.is_file()]
    assert len(chunks) == 2 and all(_levels(p.read_bytes()) == (None, None) for p in chunks)
    assert bits(zarr.open_array(str(path), mode="r")[:]) == bits(real)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_store_on_disk_codes_at_the_level(tmp_path, grads, zarr_format):
    real = grads.reshape(64, 128)
    path = tmp_path / "g.zarr"
    if zarr_format == 3:
        codecs = {"serializer": LMGCZarrCodec(level=1), "compressors": None}
    else:
        codecs = {"compressors": LMGC(level=1), "filters": None}
    z = zarr.create_array(
        str(path), shape=real.shape, chunks=(32, 128), dtype=real.dtype,
        zarr_format=zarr_format, **codecs,
    )  # fmt: skip
    z[:] = real
    if zarr_format == 3:
        meta = json.loads((path / "zarr.json").read_text())
        assert meta["codecs"][0]["configuration"]["level"] == 1
        chunks = sorted((path / "c").rglob("*"))
    else:
        assert json.loads((path / ".zarray").read_text())["compressor"]["level"] == 1
        chunks = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    chunks = [p for p in chunks if p.is_file()]
    assert len(chunks) == 2
    assert all(_levels(p.read_bytes()) == (1, 1) for p in chunks)
    back = zarr.open_array(str(path), mode="r")[:]
    assert bits(back) == bits(real)


# -- CLI -------------------------------------------------------------------------------------------


def _member_levels(archive: Path) -> list[tuple[object, object]]:
    with zipfile.ZipFile(archive) as z:
        blobs = [z.read(n) for n in z.namelist() if n.endswith(".lmgc")]
    assert blobs
    return [_levels(b) for b in blobs]


@pytest.mark.parametrize("flag", ["-l", "--level"])
def test_cli_level_1_records_it_and_decompresses_byte_identical(tmp_path, grads, flag):
    src = tmp_path / "g.npz"
    np.savez(src, a=grads, b=grads[:1000].reshape(10, 100))
    packed, back = tmp_path / "g.lmgc", tmp_path / "back.npz"
    lmgc("compress", src, "-o", packed, "-q", flag, "1")
    assert _member_levels(packed) == [(1, 1), (1, 1)]
    lmgc("decompress", packed, "-o", back, "-q")
    assert back.read_bytes() == src.read_bytes()


def _stream_levels(packed: Path) -> list[tuple[object, object]]:
    """Levels of a CLI output: a zip's stream members, or the one bare stream (a .npy)."""
    data = packed.read_bytes()
    return _member_levels(packed) if zipfile.is_zipfile(packed) else [_levels(data)]


def test_cli_without_level_is_fast_and_level_2_records_none(tmp_path, grads):
    src = tmp_path / "g.npy"
    np.save(src, grads)
    packed, back = tmp_path / "g.lmgc", tmp_path / "back.npy"
    lmgc("compress", src, "-o", packed, "-q")
    assert _stream_levels(packed) == [(1, 1)]
    lmgc("decompress", packed, "-o", back, "-q")
    assert back.read_bytes() == src.read_bytes()
    two = tmp_path / "two.lmgc"
    lmgc("compress", src, "-o", two, "-q", "-l", "2")
    assert _stream_levels(two) == [(None, None)]
    lmgc("decompress", two, "-o", tmp_path / "back2.npy", "-q")
    assert (tmp_path / "back2.npy").read_bytes() == src.read_bytes()


def test_cli_level_with_a_prior_without_levels_is_a_usage_error(tmp_path, grads):
    src = tmp_path / "g.npy"
    np.save(src, grads)
    result = lmgc("compress", src, "-o", tmp_path / "x.lmgc", "--prior", "adaptive", "-l", "1",
                  ok=False)  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "prior 'adaptive' has none" in result.stderr
