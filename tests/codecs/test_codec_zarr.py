"""The numcodecs codec ``lmgc`` and the Zarr v3 codec ``lmgc``: real stores on disk, reopened in
fresh processes, bit-exact; one chunk read = one chunk decoded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")
zarr = pytest.importorskip("zarr")

from lmgc_core.codecs.numcodecs_codec import LMGC, pipeline_cache_info  # noqa: E402
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec  # noqa: E402
from lmgc_core.coding.pipeline import Pipeline  # noqa: E402
from lmgc_core.util.errors import ConfigError  # noqa: E402
from tests.paths import TESTS_DIR  # noqa: E402

DATA = TESTS_DIR / "data"
ADAPTIVE = {"prior": {"name": "adaptive"}, "window": 512}
CHUNKS = (1, 1024)  # 7 x 4 = 28 chunks of real gradients


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    return np.load(DATA / "mlp_digits_grads_slice.npy")


def bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def fresh_python(code: str, timeout: float = 300) -> str:
    """Run ``code`` in a brand-new interpreter (nothing of this process carried over)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# -- numcodecs ------------------------------------------------------------------------------


def test_get_codec_in_a_fresh_process_without_importing_lmgc(tmp_path, real):
    np.save(tmp_path / "x.npy", real[0])
    out = fresh_python(
        f"""
        import sys, json, numpy as np, numcodecs
        assert not any(m.startswith("lmgc") for m in sys.modules)
        codec = numcodecs.get_codec({{"id": "lmgc", "prior": {{"name": "adaptive"}}}})
        x = np.load({str(tmp_path / "x.npy")!r})
        blob = codec.encode(x)
        y = codec.decode(blob)
        assert y.dtype == x.dtype and y.tobytes() == x.tobytes()
        print(json.dumps({{"cls": type(codec).__module__ + "." + type(codec).__name__,
                          "ratio": len(blob) / x.nbytes}}))
        """
    )
    result = json.loads(out)
    assert result["cls"] == "lmgc_core.codecs.numcodecs_codec.LMGC"
    assert result["ratio"] < 0.8


def test_config_round_trip_is_json():
    codec = LMGC(stages=[{"name": "quantize", "bits": 8}], prior="adaptive", window=256)
    config = codec.get_config()
    assert config["id"] == "lmgc"
    assert config["prior"] == {"name": "adaptive"} and config["window"] == 256
    again = numcodecs.get_codec(json.loads(json.dumps(config)))
    assert again == codec and again.get_config() == config
    with pytest.raises((ConfigError, TypeError)):
        LMGC(windw=3)
    with pytest.raises(ConfigError):
        LMGC(dtype="not-a-dtype")


def test_encode_decode_with_out_and_raw_bytes(real):
    x = real[2].reshape(64, 64)
    codec = LMGC(**ADAPTIVE)
    blob = codec.encode(x)
    assert bits_equal(codec.decode(blob), x)  # dtype and shape from the stream header
    out = np.empty_like(x)
    assert codec.decode(blob, out=out) is out and bits_equal(out, x)
    out_bytes = bytearray(x.nbytes)
    codec.decode(blob, out=out_bytes)
    assert bytes(out_bytes) == x.tobytes()
    # raw bytes carry no dtype: with dtype= they are viewed as float32, otherwise as uint8
    as_f4 = LMGC(dtype="float32", **ADAPTIVE)
    assert bits_equal(as_f4.decode(as_f4.encode(x.tobytes())), x.reshape(-1))
    assert codec.decode(codec.encode(x.tobytes())).tobytes() == x.tobytes()
    as_u1 = np.frombuffer(x.tobytes(), np.uint8)  # a byte array is a raw buffer too
    assert bits_equal(as_f4.decode(as_f4.encode(as_u1)), x.reshape(-1))


def test_dtype_views_raw_buffers_not_an_arrays_own_dtype():
    import ml_dtypes

    g = np.random.default_rng(0).standard_normal((8, 64)).astype(ml_dtypes.bfloat16)
    codec = LMGC(dtype="float32")
    assert bits_equal(codec.decode(codec.encode(g)), g)  # not float32 (256,)


def test_lossy_codec_returns_the_stage_reconstruction(real):
    config = {"stages": [{"name": "sparsify", "keep": 0.25}], **ADAPTIVE}
    codec = LMGC(**config)
    assert bits_equal(
        codec.decode(codec.encode(real[4])), Pipeline.from_config(config).reconstruct(real[4])
    )


def test_pipelines_are_built_once_per_process_and_config(real):
    codec = LMGC(prior="adaptive", window=128)
    before = pipeline_cache_info()
    for row in real:
        codec.encode(row[:256])
    after = pipeline_cache_info()
    assert after["builds"] - before["builds"] <= 1
    assert after["encoded"] - before["encoded"] == len(real)


def test_chunks_of_other_pipelines_find_their_own_by_the_header_key(real):
    """A chunk's pipeline is found by its header's key (the text of its pipeline and prior
    entries), so chunks of several configurations decode in any order, each with its own
    pipeline, and no chunk builds one twice; clearing the cache forgets those keys too."""
    from lmgc_core.codecs import numcodecs_codec
    from lmgc_core.coding.pipeline import read_keyed_header

    data = real[0][:512].astype(np.float32)
    laid_out = LMGC(prior={"name": "float", "layout": [[16, 32]]}, level=1)
    codecs = [LMGC(level=1), LMGC(level=2), laid_out, LMGC(level=2)]
    blobs = [c.encode(data) for c in codecs]
    keys = [read_keyed_header(b)[1] for b in blobs]
    assert None not in keys and len(set(keys)) == 3 and keys[1] == keys[3]
    for _ in range(2):
        for codec, blob in zip(codecs[::-1], blobs[::-1], strict=True):
            assert np.frombuffer(codec.decode(blob), np.float32).tobytes() == data.tobytes()
    before = pipeline_cache_info()
    for blob in blobs:
        LMGC().decode(blob)  # another codec's config: the header's pipeline decodes
    assert pipeline_cache_info()["builds"] == before["builds"]
    cache, given = numcodecs_codec._CACHE, numcodecs_codec._GIVEN
    assert set(keys) <= set(given)
    assert [cache[given[k]][0].prior.level for k in keys] == [1, 2, 1, 2]
    numcodecs_codec.clear_pipeline_cache()
    assert not set(keys) & set(numcodecs_codec._GIVEN)


# -- Zarr -----------------------------------------------------------------------------------


def _create(store, real, zarr_format, stages=()):
    config = {"stages": list(stages), **ADAPTIVE}
    if zarr_format == 3:
        codecs = {"serializer": LMGCZarrCodec(**config), "compressors": None}
    else:
        codecs = {"compressors": LMGC(**config), "filters": None}
    z = zarr.create_array(
        store, shape=real.shape, chunks=CHUNKS, dtype=real.dtype, zarr_format=zarr_format, **codecs
    )
    z[:] = real
    return config


READ_BACK = """
    import json, sys, numpy as np, zarr
    from zarr.storage import LocalStore, ZipStore
    path, kind = {path!r}, {kind!r}
    store = ZipStore(path, mode="r") if kind == "zip" else LocalStore(path, read_only=True)
    assert not any(m.startswith("lmgc") for m in sys.modules)  # found via entry points only
    z = zarr.open_array(store, mode="r")
    data = z[:]
    np.save({out!r}, data)
    from lmgc_core.codecs.numcodecs_codec import pipeline_cache_info
    info = pipeline_cache_info()
    print(json.dumps({{"format": z.metadata.zarr_format, "decoded": info["decoded"],
                      "builds": info["builds"], "model_loads": info["model_loads"]}}))
    if kind == "zip":
        store.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_write_close_reopen_in_a_new_process_is_bit_exact(tmp_path, real, zarr_format, kind):
    from zarr.storage import LocalStore, ZipStore

    path = str(tmp_path / ("grads.zip" if kind == "zip" else "grads.zarr"))
    store = ZipStore(path, mode="w") if kind == "zip" else LocalStore(path)
    _create(store, real, zarr_format)
    store.close()
    out = str(tmp_path / "back.npy")
    info = json.loads(fresh_python(READ_BACK.format(path=path, kind=kind, out=out)))
    assert (info["format"], info["decoded"], info["builds"]) == (zarr_format, 28, 1)
    assert bits_equal(np.load(out), real)
    # smaller than the raw float32s even in 4 KB chunks (each pays a ~0.5 KB stream header)
    if kind == "dir":
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        assert size < real.nbytes


def test_zarr_metadata_names_the_codec(tmp_path, real):
    _create(str(tmp_path / "v3.zarr"), real, 3)
    meta = json.loads((tmp_path / "v3.zarr" / "zarr.json").read_text())
    assert meta["codecs"] == [
        {"name": "lmgc", "configuration": LMGCZarrCodec(**ADAPTIVE).to_dict()["configuration"]}
    ]
    _create(str(tmp_path / "v2.zarr"), real, 2)
    meta2 = json.loads((tmp_path / "v2.zarr" / ".zarray").read_text())
    assert meta2["compressor"]["id"] == "lmgc" and meta2["compressor"]["prior"] == {
        "name": "adaptive"
    }


@pytest.mark.parametrize("level", [1, 2])
def test_a_zero_dimensional_array_reads_back(tmp_path, level):
    """A 0-d array's one chunk is 0-d too: its stream must record shape ``()``, not ``(1,)``
    (``np.ascontiguousarray`` had made it 1-d, and the written array could not be read)."""
    from zarr.storage import LocalStore

    value = np.float32(-0.0)
    z = zarr.create_array(
        store=LocalStore(tmp_path / "x.zarr"),
        shape=(),
        dtype="float32",
        serializer=LMGCZarrCodec(level=level),
        compressors=None,
    )
    z[...] = value
    back = zarr.open_array(store=LocalStore(tmp_path / "x.zarr"), mode="r")[...]
    assert bits_equal(back, np.asarray(value))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_reading_one_chunk_decodes_only_that_chunk(tmp_path, real, zarr_format):
    path = tmp_path / "g.zarr"
    _create(str(path), real, zarr_format)
    # corrupt chunk (0, 0): other chunks must not care, since every chunk is its own stream
    chunk0 = path / ("c/0/0" if zarr_format == 3 else "0.0")
    raw = bytearray(chunk0.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk0.write_bytes(bytes(raw))
    out = fresh_python(
        f"""
        import json, numpy as np, zarr
        from lmgc_core.codecs.numcodecs_codec import pipeline_cache_info
        z = zarr.open_array({str(path)!r}, mode="r")
        row = z[3, 1024:2048]
        decoded = pipeline_cache_info()["decoded"]
        try:
            z[0, :1024]
            broken = "no error"
        except Exception as exc:
            broken = type(exc).__name__
        print(json.dumps({{"decoded": decoded, "row": row.tobytes().hex(), "broken": broken}}))
        """
    )
    result = json.loads(out)
    assert result["decoded"] == 1
    assert bytes.fromhex(result["row"]) == real[3, 1024:2048].tobytes()
    assert result["broken"] in {"ChecksumError", "StreamError", "TruncatedStreamError"}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_lossy_stages_in_zarr_reconstruct_each_chunk(tmp_path, real, zarr_format):
    stages = [{"name": "quantize", "bits": 8}]
    config = _create(str(tmp_path / "q.zarr"), real, zarr_format, stages)
    back = zarr.open_array(str(tmp_path / "q.zarr"), mode="r")[:]
    pipe = Pipeline.from_config(config)
    for i in range(real.shape[0]):
        for j in range(0, real.shape[1], CHUNKS[1]):
            block = real[i : i + 1, j : j + CHUNKS[1]]
            assert bits_equal(back[i : i + 1, j : j + CHUNKS[1]], pipe.reconstruct(block))


def _variable_size_dtypes() -> list:
    dtypes = [np.dtype(object), np.dtypes.StringDType()]
    try:  # zarr >= 3.1 hands the codec its own dtype objects
        from zarr.core.dtype import parse_data_type
    except ImportError:
        return dtypes
    return [*dtypes, parse_data_type(str, zarr_format=3)]


@pytest.mark.parametrize("dtype", _variable_size_dtypes(), ids=str)
def test_v3_codec_rejects_variable_length_strings(tmp_path, dtype):
    """Fixed-size dtypes (``<U4`` included) are coded through a view; variable-length strings
    have no fixed bytes to code, and lmgc's own check says so. (zarr-python itself refuses a
    string dtype with any serializer but its own before it asks the codec, so the codec's check
    is called directly; ``create_array`` is refused either way.)"""
    codec = LMGCZarrCodec()
    for fixed in ("<U4", "|S3", "<c8", "<M8[s]", "<f4"):
        codec.validate(shape=(4,), dtype=np.dtype(fixed), chunk_grid=None)
    with pytest.raises(ConfigError, match=r"codes fixed-size dtypes .* not variable-size"):
        codec.validate(shape=(4,), dtype=dtype, chunk_grid=None)
    with pytest.raises((ConfigError, ValueError)):
        zarr.create_array(
            str(tmp_path / "s.zarr"), shape=(4,), dtype=str, serializer=codec, compressors=None
        )


@pytest.mark.parametrize(
    "kind, replacement, decodes",
    [
        ("shorter", lambda real: real[0, :512], False),
        ("longer", lambda real: real[0, :2048].reshape(1, 2048), False),
        ("other dtype, same bytes", lambda real: real[0, :512].astype(np.float64), True),
        ("other shape, same size", lambda real: real[0, :1024].reshape(32, 32), True),
    ],
)
def test_v3_chunk_replaced_by_another_stream_is_refused_by_lmgc(
    tmp_path, real, kind, replacement, decodes
):
    """A chunk file replaced by a valid stream of another array is refused with lmgc's
    ``StreamError`` naming what the stream holds and what the array expects; one that declares
    another size is refused from its header, before anything is decoded or allocated."""
    from lmgc_core.util.errors import StreamError

    path = tmp_path / "g.zarr"
    config = _create(str(path), real, 3)
    other = replacement(real)
    (path / "c" / "0" / "0").write_bytes(Pipeline.from_config(config).compress(other))
    z = zarr.open_array(str(path), mode="r")
    assert bits_equal(z[0, 1024:2048], real[0, 1024:2048])  # the other chunks are untouched
    decoded = pipeline_cache_info()["decoded"]
    with pytest.raises(StreamError) as error:
        z[0, :1024]
    message = str(error.value)
    assert "lmgc" in message and str(list(other.shape)) in message, message
    assert "4096 bytes" in message or "float32[1, 1024]" in message, message
    assert pipeline_cache_info()["decoded"] - decoded == int(decodes), kind


@pytest.mark.lm
def test_smollm2_prior_through_zarr(tmp_path, real):
    """The real SmolLM2 prior as a Zarr v3 codec over a tiny array (16 floats, window 128)."""
    from lmgc_core.components import registry

    for name in ("transformers", "llamacpp"):
        try:
            reg = registry.get("prior", name)
        except Exception:
            continue
        if reg.available:
            break
    else:
        pytest.skip("no LM prior plugin (transformers / llamacpp) is installed")
    config = {"prior": {"name": name}, "window": 128}
    x = real[5, 100:116].reshape(2, 8)  # 16 real gradients, 2 chunks (CPU LM steps are slow)
    path = str(tmp_path / "lm.zarr")
    z = zarr.create_array(
        path,
        shape=x.shape,
        chunks=(1, 8),
        dtype=x.dtype,
        serializer=LMGCZarrCodec(**config),
        compressors=None,
    )
    z[:] = x
    out = str(tmp_path / "lm.npy")
    info = json.loads(fresh_python(READ_BACK.format(path=path, kind="dir", out=out), 1800))
    assert bits_equal(np.load(out), x)
    # two chunks decoded in the new process, one model load
    assert info["decoded"] == 2 and info["builds"] == 1
    assert info["model_loads"].get(f"lmgc_{name}") == 1, info


@pytest.mark.parametrize(("array_dtype", "chunks"), [(">f4", (1, 2)), ("<f4", (3, 2))])
def test_big_endian_values_read_back(tmp_path, array_dtype, chunks):
    """A big-endian array's chunks, or a big-endian value assigned to a whole chunk, were
    coded in their own byte order and then refused on every read ("holds >f4, the array
    expects float32"): the metadata, with no bytes codec, keeps no byte order."""
    import zarr

    data = np.arange(6, dtype=">f4").reshape(3, 2) - 2.5
    path = str(tmp_path / "be.zarr")
    z = zarr.create_array(path, shape=data.shape, chunks=chunks, dtype=array_dtype,
                          serializer=LMGCZarrCodec(), compressors=None)  # fmt: skip
    z[:] = data
    back = zarr.open_array(path, mode="r")[:]
    assert back.astype("<f4").tobytes() == data.astype("<f4").tobytes()


def test_get_config_is_a_copy_that_cannot_change_the_codec():
    codec = LMGC(prior="float")
    config = codec.get_config()
    config["stages"].append({"name": "quantize", "bits": 4})
    config["prior"]["name"] = "adaptive"
    assert codec.get_config()["stages"] == [] and codec.get_config()["prior"] == {"name": "float"}
    x = np.random.default_rng(1).standard_normal(300).astype(np.float32)
    assert codec.decode(codec.encode(x)).tobytes() == x.tobytes()


def test_dataclasses_replace_keeps_the_configuration(tmp_path, real):
    """zarr codecs are frozen dataclasses that zarr and its users evolve with
    ``dataclasses.replace``, which passes every field: ``config_json`` was an unknown keyword."""
    import dataclasses

    codec = LMGCZarrCodec(prior="float", level=2, time_axis=0)
    assert dataclasses.replace(codec) == codec
    evolved = dataclasses.replace(codec, time_axis=None)
    assert evolved.pipeline_config == codec.pipeline_config and evolved.time_axis is None
    other = dataclasses.replace(codec, config_json=json.dumps(ADAPTIVE))
    assert other.pipeline_config["prior"] == {"name": "adaptive"} and other.time_axis == 0
    with pytest.raises(ConfigError, match="give it or"):
        LMGCZarrCodec(prior="float", config_json=codec.config_json)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        dataclasses.replace(codec, config_json="[1]")
    store = tmp_path / "sharded.zarr"  # a replaced codec inside a shard, on disk, read back
    arr = zarr.create_array(store, shape=real.shape, chunks=(1, 512), shards=CHUNKS,
                            dtype=real.dtype, serializer=evolved)  # fmt: skip
    arr[:] = real
    assert bits_equal(zarr.open_array(store)[:], real)


def test_time_axis_names_the_dimensions_of_a_0d_chunk():
    with pytest.raises(ConfigError, match="out of range for a 0-d array"):
        LMGC(time_axis=1).encode(np.float32(1))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(3, dtype=np.complex64) + 1j,
        np.arange(3).astype("M8[s]"),
        np.array(["ab", "c"], dtype="<U2"),
        np.zeros(2, dtype=[("a", "<f4"), ("b", "u1")]),
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    ],
    ids=["complex", "datetime", "unicode", "record", "fortran"],
)
def test_lmgc_core_decompress_gives_a_noted_stream_its_own_array(array):
    """The stream is self-describing: lmgc_core.decompress gave the coding view instead (float
    pairs, int64, code points, bytes, the transpose) with no word."""
    import lmgc_core

    back = lmgc_core.decompress(LMGC().encode(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes(order="A") == array.tobytes(order="A")
