"""The codecs' ``time_axis`` option (issue 21): inside a chunk, each step along the axis is coded
against the step before it. Real Zarr stores on disk, real training series, bit-exact reads,
metadata that needs no option to read back, chunks that stay independent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
numcodecs = pytest.importorskip("numcodecs")

from lmgc_core.codecs.numcodecs_codec import (  # noqa: E402
    LMGC,
    clear_pipeline_cache,
    pipeline_cache_info,
)
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec  # noqa: E402
from lmgc_core.coding import time_axis as series  # noqa: E402
from lmgc_core.stream import container  # noqa: E402
from lmgc_core.util.errors import ConfigError, LMGCError, MismatchError, StreamError  # noqa: E402
from tests.paths import TESTS_DIR  # noqa: E402
from tests.sgd_mlp import sgd_snapshots  # noqa: E402

DATA = TESTS_DIR / "data"
SHAPE = (7, 40, 64)  # 7 steps of a 40 x 64 weight matrix
CHUNKS = (3, 32, 64)  # 3 chunks along time (the last one partial), 2 along rows (one partial)


def sgd_series(steps: int = 8, every: int = 10, seed: int = 0) -> np.ndarray:
    """A real training series: the first layer (64 x 256) of an MLP trained by SGD on
    scikit-learn's handwritten digits, one snapshot every ``every`` steps."""
    return np.stack([w1 for w1, _ in sgd_snapshots(steps, every, seed)])


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return sgd_series()


def special(dtype: np.dtype) -> np.ndarray:
    """``SHAPE`` values of ``dtype`` from a real series, with every awkward bit pattern the
    type has (NaN payloads, -0.0, inf, subnormals, extremes) dropped in, some of them changing
    from one step to the next."""
    dtype = np.dtype(dtype)
    w = sgd_series(SHAPE[0], 5)[:, :40, :64]
    if dtype.kind not in "iu":  # numpy's floats and ml_dtypes' (bfloat16, float8)
        arr = w.astype(dtype)
        bits = arr.view(f"u{dtype.itemsize}")
        info = ml_dtypes.finfo(dtype)
        arr[0, 0, :4] = [0.0, -0.0, info.smallest_subnormal, -info.max]
        if dtype.itemsize > 1 or np.isinf(np.array(np.inf, dtype=dtype)):
            arr[1:, 1, 0] = np.array(np.inf, dtype=dtype)
        nan = np.array(np.nan, dtype=dtype).view(bits.dtype)
        bits[2, 2, :3] = nan | 1, nan | 3, nan  # NaN payloads
        bits[3, 2, :3] = nan  # ...that change between steps
        return arr
    info = np.iinfo(dtype)
    scaled = np.round(w / np.abs(w).max() * min(info.max, 1 << 20))
    arr = scaled.astype(np.int64).astype(dtype)
    arr[0, 0, :2] = [info.min, info.max]
    return arr


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "zarr.json")


def chunk_files(path: Path) -> list[Path]:
    return sorted(f for f in path.rglob("*") if f.is_file() and f.name != "zarr.json")


def create(path: Path, data: np.ndarray, chunks=CHUNKS, **codec) -> zarr.Array:
    z = zarr.create_array(
        str(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
        serializer=LMGCZarrCodec(**codec), compressors=None, fill_value=0,
    )  # fmt: skip
    z[:] = data
    return z


# -- round trips in real stores ----------------------------------------------------------------

ZARR_DTYPES = ["float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64"]  # fmt: skip


@pytest.mark.parametrize("dtype", ZARR_DTYPES)
def test_store_round_trip_every_dtype_with_edge_chunks(tmp_path, dtype):
    data = special(dtype)
    create(tmp_path / "a.zarr", data, time_axis=0)
    back = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert bits_equal(back[:], data)
    assert bits_equal(back[5:7, 30:40], data[5:7, 30:40])  # the partial corner chunk alone
    # every chunk of 3 steps is a series of step streams, each step after the first a delta
    full = [f for f in chunk_files(tmp_path / "a.zarr") if f.parts[-3] in "01"]
    for f in full:
        header = container.read_header(f.read_bytes())[0]
        assert header["series"] == {"version": 0, "time_axis": 0, "steps": 3}


@pytest.mark.parametrize(
    "dtype", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, np.float32]
)
def test_numcodecs_codec_round_trips_float_formats_zarr_cannot_store(dtype):
    data = special(dtype)
    codec = LMGC(time_axis=0)
    blob = codec.encode(data)
    assert container.read_header(blob)[0]["series"]["steps"] == SHAPE[0]
    assert bits_equal(codec.decode(blob), data)
    assert bits_equal(LMGC().decode(blob), data)  # the stream, not the codec, says how
    out = np.empty_like(data)
    assert codec.decode(blob, out=out) is out and bits_equal(out, data)


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_other_axes_and_negative_axis(tmp_path, weights, axis):
    data = np.ascontiguousarray(weights[:, :24, :40])
    chunks = {1: (8, 5, 40), -1: (4, 24, 16), 2: (8, 24, 7)}[axis]
    create(tmp_path / "a.zarr", data, chunks=chunks, time_axis=axis)
    assert bits_equal(zarr.open_array(str(tmp_path / "a.zarr"))[:], data)


def test_fortran_order_and_complex_in_numcodecs(weights):
    f = np.asfortranarray(weights[:4, :10, :12])
    codec = LMGC(time_axis=0)
    blob = codec.encode(f)  # coded as its transpose (memory order): the axis is the last one
    assert container.read_header(blob)[0]["series"] == {"version": 0, "time_axis": 2, "steps": 4}
    back = codec.decode(blob, out=np.empty_like(f))
    assert back.tobytes(order="A") == f.tobytes(order="A")
    c = (weights[:4, :8] + 1j * weights[4:, :8]).astype(np.complex64)
    blob = codec.encode(c)
    assert container.read_header(blob)[0]["series"]["time_axis"] == 0
    assert bits_equal(codec.decode(blob), c)


def test_zarr_v2_format_with_the_numcodecs_codec(tmp_path, weights):
    z = zarr.create_array(
        str(tmp_path / "v2.zarr"), shape=weights.shape, chunks=(4, 64, 128), dtype="float32",
        zarr_format=2, compressors=LMGC(time_axis=0), filters=None,
    )  # fmt: skip
    z[:] = weights
    meta = json.loads((tmp_path / "v2.zarr" / ".zarray").read_text())
    assert meta["compressor"]["time_axis"] == 0
    assert bits_equal(zarr.open_array(str(tmp_path / "v2.zarr"))[:], weights)


# -- metadata, independence, the gain ------------------------------------------------------------


def test_metadata_records_the_axis_and_a_fresh_process_reads_it(tmp_path, weights):
    create(tmp_path / "w.zarr", weights, chunks=(4, 64, 256), time_axis=0, level=1)
    codecs = json.loads((tmp_path / "w.zarr" / "zarr.json").read_text())["codecs"]
    assert codecs[0]["name"] == "lmgc" and codecs[0]["configuration"]["time_axis"] == 0
    np.save(tmp_path / "w.npy", weights)
    code = f"""
        import numpy as np, zarr
        z = zarr.open_array({str(tmp_path / "w.zarr")!r}, mode="r")
        assert z[:].tobytes() == np.load({str(tmp_path / "w.npy")!r}).tobytes()
        print(type(z.serializer).__name__, z.serializer.time_axis)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["LMGCZarrCodec", "0"]


def test_config_round_trip_and_off_by_default():
    codec = LMGCZarrCodec(time_axis=0, prior="float")
    again = LMGCZarrCodec.from_dict(json.loads(json.dumps(codec.to_dict())))
    assert again == codec and again.time_axis == 0
    assert "time_axis" not in LMGCZarrCodec().to_dict()["configuration"]
    assert LMGCZarrCodec(time_axis=1) != LMGCZarrCodec()
    config = LMGC(time_axis=-1).get_config()
    assert config["time_axis"] == -1 and numcodecs.get_codec(config).time_axis == -1
    assert "time_axis" not in LMGC().get_config()


@pytest.mark.parametrize("bad", ["0", 1.0, True, [0]])
def test_a_bad_time_axis_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="time_axis"):
        LMGCZarrCodec(time_axis=bad)
    with pytest.raises(ConfigError, match="time_axis"):
        LMGC(time_axis=bad)


def test_an_axis_outside_the_array_is_refused_when_it_is_created(tmp_path):
    with pytest.raises(ConfigError, match="time_axis 2 is out of range"):
        zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 8), chunks=(2, 8),
                          dtype="float32", serializer=LMGCZarrCodec(time_axis=2),
                          compressors=None)  # fmt: skip


def test_reading_one_chunk_decodes_only_that_chunk(tmp_path, weights):
    create(tmp_path / "w.zarr", weights, chunks=(4, 32, 256), time_axis=0)
    z = zarr.open_array(str(tmp_path / "w.zarr"), mode="r")
    clear_pipeline_cache()
    assert bits_equal(z[4:8, 32:64], weights[4:8, 32:64])
    assert pipeline_cache_info()["decoded"] == 1


def test_time_axis_beats_the_same_codec_without_it_on_a_real_series(tmp_path, weights):
    create(tmp_path / "on.zarr", weights, chunks=(8, 64, 256), time_axis=0)
    create(tmp_path / "off.zarr", weights, chunks=(8, 64, 256))
    on, off = store_bytes(tmp_path / "on.zarr"), store_bytes(tmp_path / "off.zarr")
    assert on < 0.85 * off, (on, off)  # measured: 0.74 -> 0.55 of the raw bytes


def test_one_step_chunks_are_ordinary_streams(tmp_path, weights):
    create(tmp_path / "w.zarr", weights, chunks=(1, 64, 256), time_axis=0)
    for f in chunk_files(tmp_path / "w.zarr"):
        assert "series" not in container.read_header(f.read_bytes())[0]
    assert bits_equal(zarr.open_array(str(tmp_path / "w.zarr"))[:], weights)


# -- damaged chunks ------------------------------------------------------------------------------


def _series_blob(weights: np.ndarray) -> bytes:
    return LMGC(time_axis=0).encode(weights[:4, :16, :32])


def _repack(blob: bytes, order: list[int], header_edit=None) -> bytes:
    header, _ = container.read_header(blob)
    blocks = [bytes(b) for b in container.unpack(blob).blocks]
    blocks = [blocks[i] for i in order]
    header["parts"][0]["blocks"] = [[len(b), __import__("zlib").crc32(b)] for b in blocks]
    if header_edit:
        header_edit(header)
    return container.pack(header, blocks)


def test_steps_decoded_against_another_base_are_refused(weights):
    blob = _series_blob(weights)
    swapped = _repack(blob, [0, 2, 1, 3])  # every stream intact, the bases now wrong
    with pytest.raises(LMGCError):
        LMGC().decode(swapped)


@pytest.mark.parametrize("order", [[0, 1, 2, 0], [1, 1, 2, 3]])
def test_a_step_stream_coded_alone_or_with_a_base_in_the_wrong_place_is_refused(weights, order):
    """The first step's stream (coded alone) as the last step decoded, as that step's values
    (the values of step 0), before series decoding required a base for every later step."""
    with pytest.raises(MismatchError, match="coded"):
        LMGC().decode(_repack(_series_blob(weights), order))


def test_a_bad_series_header_or_a_truncated_chunk_is_a_stream_error(weights):
    blob = _series_blob(weights)
    with pytest.raises(StreamError):
        LMGC().decode(blob[:-5])
    with pytest.raises(StreamError, match="step streams"):
        LMGC().decode(_repack(blob, [0, 1, 2]))  # a step missing
    for edit in (
        lambda h: h["series"].update(version=7),
        lambda h: h["series"].update(time_axis=3),
        lambda h: h["series"].update(steps=5),
        lambda h: h["series"].update(time_axis="0"),
    ):
        with pytest.raises(StreamError, match="series chunk"):
            LMGC().decode(_repack(blob, [0, 1, 2, 3], edit))
    # a step stream that declares another shape than the chunk's steps
    other = LMGC().encode(weights[:1, :8, :32].reshape(8, 32))
    blocks = [bytes(b) for b in container.unpack(blob).blocks]
    header = container.read_header(blob)[0]
    blocks[0] = other
    header["parts"][0]["blocks"] = [[len(b), __import__("zlib").crc32(b)] for b in blocks]
    with pytest.raises(StreamError, match="step 0 declares"):
        LMGC().decode(container.pack(header, blocks))


def test_resolve_axis_and_view_axis():
    assert series.resolve_axis(-1, 3) == 2
    assert series.view_axis(0, 3, {"order": "F"}) == 2
    assert series.view_axis(0, 1, None) is None  # steps of single values: no series
    assert series.view_axis(None, 3, None) is None
    with pytest.raises(ConfigError, match="out of range for a 1-d"):  # was ignored on 1-d
        series.view_axis(5, 1, None)


def test_dask_to_zarr_takes_time_axis_in_its_config(tmp_path, weights):
    """``lmgc_core.codecs.dask.to_zarr`` (on Dask's local scheduler) passes ``time_axis`` to the
    codec: the chunks are series; ``warm_workers`` builds the pipeline without it."""
    pytest.importorskip("dask")
    from lmgc_core.codecs.dask import to_zarr, warm_workers

    to_zarr(weights, str(tmp_path / "d.zarr"), {"time_axis": 0}, chunks=(4, 64, 256))
    assert bits_equal(zarr.open_array(str(tmp_path / "d.zarr"))[:], weights)
    for f in chunk_files(tmp_path / "d.zarr"):
        assert container.read_header(f.read_bytes())[0]["series"]["steps"] == 4

    class Client:  # warm_workers hands (function, config) to client.run
        def run(self, function, config):
            return function(config)

    assert warm_workers(Client(), {"time_axis": 0})["builds"] >= 0


@pytest.mark.parametrize(
    "config", [{"stages": [{"name": "quantize", "bits": 8}]}, {"prior": "adaptive"}]
)
def test_a_pipeline_without_delta_coding_refuses_time_axis(weights, config):
    """Stages change the values, the adaptive prior has no delta path: a clear ConfigError
    naming the option, not steps silently coded alone."""
    with pytest.raises(ConfigError, match=r"time_axis(:| needs)"):
        LMGC(time_axis=0, **config).encode(weights[:2, :8, :16])
    LMGC(**config).encode(weights[:2, :8, :16])  # without time_axis it codes


def test_steps_written_one_at_a_time_as_training_goes(tmp_path, weights):
    """A run appends each checkpoint as it comes: Zarr reads back the partial chunk, and the
    codec codes it again with the new step against the one before it."""
    z = zarr.create_array(
        str(tmp_path / "run.zarr"), shape=(0, *weights.shape[1:]), chunks=(4, 64, 256),
        dtype="float32", serializer=LMGCZarrCodec(time_axis=0), compressors=None,
    )  # fmt: skip
    for step in weights:
        z.append(step[None], axis=0)
    again = zarr.open_array(str(tmp_path / "run.zarr"), mode="r")
    assert again.shape == weights.shape and bits_equal(again[:], weights)
    for f in chunk_files(tmp_path / "run.zarr"):
        assert container.read_header(f.read_bytes())[0]["series"]["steps"] == 4


@pytest.mark.parametrize("steps", [1 << 30, 1 << 44])
def test_a_chunk_declaring_a_huge_array_is_refused_before_memory_is_asked(steps):
    """The chunk's array was allocated before its step headers were read: a few hundred bytes
    declaring (2, 2^44) float32 raised numpy's MemoryError out of decode."""
    good = LMGC(time_axis=0).encode(np.ones((2, 8), np.float32))
    head, offset = container.read_header(good)
    box = container.unpack(good, (head, offset))
    forged = container.pack(
        {**head, "array": {"dtype": "<f4", "shape": [2, steps]}}, [bytes(b) for b in box.blocks]
    )
    with pytest.raises(StreamError, match="step 0 declares"):
        LMGC().decode(forged)
