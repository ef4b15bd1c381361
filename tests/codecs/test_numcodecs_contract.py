"""The lmgc codec under numcodecs' own contract checks (``numcodecs.tests.common``, the helpers
numcodecs runs on its built-in codecs), and every fixed-size dtype through numcodecs and real
Zarr v3 / v2 stores on disk, bit for bit."""

from __future__ import annotations

import logging
import warnings

import ml_dtypes
import numcodecs
import numpy as np
import pytest
from numcodecs.tests.common import (
    check_config,
    check_encode_decode,
    check_encode_decode_array,
    check_err_decode_object_buffer,
    check_err_encode_object_buffer,
)

from lmgc_core.codecs.numcodecs_codec import LMGC
from tests.conftest import same_bits

zarr = pytest.importorskip("zarr")
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec  # noqa: E402


def _arrays() -> list[np.ndarray]:
    """numcodecs' own test arrays (test_zlib.py and friends) plus every other fixed-size kind."""
    rng = np.random.default_rng(42)
    return [
        np.arange(1000, dtype="i4"),
        np.linspace(1000, 1001, 1000, dtype="f8"),
        rng.normal(loc=1000, scale=1, size=(100, 10)),
        rng.integers(0, 2, size=1000, dtype=bool).reshape(100, 10, order="F"),
        rng.choice([b"a", b"bb", b"ccc"], size=1000).reshape(10, 10, 10),
        rng.integers(0, 2**60, size=1000, dtype="u8").view("M8[ns]"),
        rng.integers(0, 2**60, size=1000, dtype="u8").view("m8[ns]"),
        rng.integers(-(2**63), -(2**63) + 20, size=1000, dtype="i8").view("M8[m]"),
        rng.integers(-(2**63), -(2**63) + 20, size=1000, dtype="i8").view("m8[m]"),
        (rng.normal(size=500) + 1j * rng.normal(size=500)).astype("c8").reshape(50, 10),
        np.asfortranarray(rng.normal(size=(20, 30)) * (1 - 2j)),
        np.array(["hé", "x", "", "zz"] * 25, dtype="<U2"),
        np.array(["ab", "€"] * 10, dtype=">U1"),
        np.zeros(40, dtype=[("a", "<i2"), ("b", ">f8"), ("c", "S3")]),
        rng.normal(size=300).astype(ml_dtypes.bfloat16),
        np.array([np.nan, -0.0, np.inf, 5e-324, -np.inf], dtype="f8"),
    ]


@pytest.fixture(scope="module")
def codec() -> LMGC:
    return numcodecs.get_codec({"id": "lmgc"})  # the default pipeline, found by entry point


def test_numcodecs_contract_checks(codec):
    for arr in _arrays():
        check_encode_decode(arr, codec)
        check_encode_decode_array(arr, codec)
        back = codec.decode(codec.encode(arr))
        assert back.dtype == arr.dtype and back.shape == arr.shape
        assert back.tobytes(order="A") == arr.tobytes(order="A")
    check_config(codec)
    check_config(LMGC(prior="adaptive", window=64, stages=[{"name": "quantize", "bits": 8}]))
    check_err_encode_object_buffer(codec)
    check_err_decode_object_buffer(codec)


def test_object_buffers_raise_type_error(codec):
    with pytest.raises(TypeError):
        codec.encode(np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(TypeError):
        codec.decode(codec.encode(np.arange(3.0)), out=np.empty(3, dtype=object))


DTYPES_V3 = {
    "complex64": lambda rng: (rng.normal(size=60) + 1j).astype("c8"),
    "complex128": lambda rng: rng.normal(size=60) * (2 - 1j),
    "datetime64[s]": lambda rng: rng.integers(0, 2**40, 60).astype("M8[s]"),
    "timedelta64[ns]": lambda rng: rng.integers(-(2**50), 2**50, 60).astype("m8[ns]"),
    "|S4": lambda rng: rng.choice([b"ab", b"wxyz", b""], 60).astype("S4"),
    "<U2": lambda rng: rng.choice(["hé", "x", ""], 60).astype("<U2"),
    "bool": lambda rng: rng.integers(0, 2, 60).astype(bool),
    "int16": lambda rng: rng.integers(-999, 999, 60).astype("i2"),
    "float16": lambda rng: rng.normal(size=60).astype("f2"),
}


@pytest.mark.parametrize("dtype", list(DTYPES_V3))
def test_zarr_v3_every_fixed_size_dtype(tmp_path, dtype):
    data = DTYPES_V3[dtype](np.random.default_rng(7)).reshape(6, 10)
    path = str(tmp_path / "a.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: |S and <U have no v3 spec yet ("unstable")
        z = zarr.create_array(
            path,
            shape=data.shape,
            chunks=(4, 7),
            dtype=data.dtype,
            serializer=LMGCZarrCodec(window=64),
            compressors=None,
            fill_value=data.reshape(-1)[0],
        )
        z[:] = data
        back = zarr.open_array(path, mode="r")[:]
    assert same_bits(back, data)


@pytest.mark.parametrize("dtype", ["complex64", "datetime64[ms]", "|S4", "<U2"])
def test_zarr_v2_with_the_numcodecs_codec(tmp_path, dtype):
    rng = np.random.default_rng(3)
    data = {
        "complex64": lambda: (rng.normal(size=40) - 2j).astype("c8"),
        "datetime64[ms]": lambda: rng.integers(0, 2**45, 40).astype("M8[ms]"),
        "|S4": lambda: rng.choice([b"ab", b"wxyz"], 40).astype("S4"),
        "<U2": lambda: rng.choice(["hé", "x"], 40).astype("<U2"),
    }[dtype]().reshape(4, 10)
    path = str(tmp_path / "v2.zarr")
    z = zarr.create_array(
        path,
        shape=data.shape,
        chunks=(3, 10),
        dtype=data.dtype,
        zarr_format=2,
        compressors=LMGC(window=64),
        filters=None,
    )
    z[:] = data
    assert same_bits(zarr.open_array(path, mode="r")[:], data)


def test_chunk_intervals_are_kept_only_with_the_codecs_logger_at_debug(caplog):
    """Every coded chunk's interval was kept (up to 100,000: 16 MB in each process) whether or
    not anyone asked; now only with the codec's logger at DEBUG, which also logs each one."""
    from lmgc_core.codecs import numcodecs_codec

    codec, x = LMGC(level=1), np.linspace(-1, 1, 256, dtype=np.float32)
    numcodecs_codec.clear_pipeline_cache()
    codec.decode(codec.encode(x))
    assert numcodecs_codec.chunk_intervals() == [] and caplog.records == []
    info = numcodecs_codec.pipeline_cache_info()
    assert (info["encoded"], info["decoded"]) == (1, 1)  # counted all the same
    caplog.set_level(logging.DEBUG, logger=numcodecs_codec.__name__)
    codec.decode(codec.encode(x))
    assert [op for op, *_ in numcodecs_codec.chunk_intervals()] == ["encoded", "decoded"]
    assert [r.getMessage().split()[0] for r in caplog.records] == ["encoded", "decoded"]
    numcodecs_codec.clear_pipeline_cache()
