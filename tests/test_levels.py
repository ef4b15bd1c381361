"""Levels (as in zstd): the pipeline key ``level``, the codecs' ``level`` and ``lmgc compress -l``
all select the float prior's level; streams record it in the prior's config and decode at it
without being told."""

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
    # a default (highest-level) pipeline decodes it too, at the level the stream records
    assert bits(Pipeline.from_config({}).decompress(blob)) == bits(grads)


def test_level_2_and_no_level_make_the_same_stream(grads):
    default = Pipeline.from_config({})
    assert "level" not in default.get_config()["prior"]
    blob = default.compress(grads)
    assert _levels(blob) == (None, None)
    assert Pipeline.from_config({"level": 2}).compress(grads) == blob
    assert Pipeline.from_config({"level": None}).compress(grads) == blob
    fast = Pipeline.from_config({"level": 1}).compress(grads)
    assert fast != blob and bits(Pipeline.from_config({"level": 1}).decompress(blob)) == bits(grads)


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
    assert "level" not in LMGC().get_config()  # configs without a level stay as they were
    blob = codec.encode(grads)
    assert _levels(blob) == (1, 1)
    assert bits(LMGC().decode(blob)) == bits(grads)


def test_zarr_codec_config_round_trips_the_level():
    codec = LMGCZarrCodec(level=1)
    data = codec.to_dict()
    assert data["configuration"]["level"] == 1
    assert LMGCZarrCodec.from_dict(json.loads(json.dumps(data))) == codec
    assert LMGCZarrCodec.from_dict(data).to_dict() == data
    assert "level" not in LMGCZarrCodec().to_dict()["configuration"]


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


def test_cli_without_level_is_unchanged(tmp_path, grads):
    src = tmp_path / "g.npy"
    np.save(src, grads)
    packed, back = tmp_path / "g.lmgc", tmp_path / "back.npy"
    lmgc("compress", src, "-o", packed, "-q")
    assert _member_levels(packed) == [(None, None)]
    lmgc("decompress", packed, "-o", back, "-q")
    assert back.read_bytes() == src.read_bytes()
    lmgc("compress", src, "-o", tmp_path / "two.lmgc", "-q", "-l", "2")
    assert _member_levels(tmp_path / "two.lmgc") == [(None, None)]


def test_cli_level_with_a_prior_without_levels_is_a_usage_error(tmp_path, grads):
    src = tmp_path / "g.npy"
    np.save(src, grads)
    result = lmgc("compress", src, "-o", tmp_path / "x.lmgc", "--prior", "adaptive", "-l", "1",
                  ok=False)  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "prior 'adaptive' has none" in result.stderr
