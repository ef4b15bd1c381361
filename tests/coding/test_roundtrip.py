"""Bit-exact round trips for every serializer layout with the built-in priors (Python API)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lmgc_core import Pipeline, decompress
from lmgc_core.components import registry
from tests.conftest import same_bits

FLOAT_TYPES = {
    "float16": (np.float16, np.uint16),
    "bfloat16": (ml_dtypes.bfloat16, np.uint16),
    "float32": (np.float32, np.uint32),
    "float64": (np.float64, np.uint64),
}

SERIALIZERS = [
    {"name": "hex"},
    {"name": "hex", "separator": ""},
    {"name": "hex", "separator": ","},
    {"name": "hex", "separator": ", "},
    {"name": "hex", "separator": ";", "prefix": "0x"},
    {"name": "hex", "bytes_per_group": 1},
    {"name": "hex", "bytes_per_group": 2},
    {"name": "hex", "bytes_per_group": 3},
    {"name": "hex", "bytes_per_group": 8, "prefix": "0x"},
    {"name": "hex", "bytes_per_group": 0, "separator": ""},
    {"name": "hex", "byte_order": "little"},
    {"name": "iso"},
    {"name": "iso", "byte_order": "little"},
]


@st.composite
def float_arrays(draw):
    """Arrays drawn as raw bit patterns, so NaN payloads, -0.0, infinities and subnormals occur."""
    name = draw(st.sampled_from(sorted(FLOAT_TYPES)))
    ftype, utype = FLOAT_TYPES[name]
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12))
    bits = draw(
        hnp.arrays(
            utype,
            shape,
            elements=st.one_of(
                st.integers(0, np.iinfo(utype).max),
                st.sampled_from(_special_bits(ftype, utype)),
            ),
        )
    )
    return bits.view(ftype)


def _special_bits(ftype, utype) -> list[int]:
    vals = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0], dtype=ftype).view(utype)
    specials = [int(v) for v in vals]
    nbits = np.dtype(utype).itemsize * 8
    specials += [1, (1 << (nbits - 1)) | 1, (1 << nbits) - 1]  # subnormals, NaN all-ones payload
    return specials


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: str(sorted(s.items())))
@pytest.mark.parametrize("prior", ["uniform", "adaptive"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=float_arrays(), window=st.sampled_from([2, 12, 40]), batch=st.sampled_from([1, 3]))
def test_round_trip_is_bit_exact(serializer, prior, array, window, batch):
    options = {k: v for k, v in serializer.items() if k != "name"}
    period = registry.build("serializer", serializer["name"], options).period
    window = max(window, period + 1)  # the smallest window holds BOS + one period
    pipe = Pipeline.from_config(
        {"serializer": serializer, "prior": prior, "window": window, "batch": batch}
    )
    blob = pipe.compress(array)
    assert same_bits(pipe.decompress(blob), array)
    assert same_bits(decompress(blob), array)


@given(
    array=hnp.arrays(
        st.sampled_from([np.int8, np.uint16, np.int32, np.uint64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=20),
    )
)
@settings(max_examples=30, deadline=None)
def test_integer_and_bool_arrays_round_trip(array):
    assert same_bits(decompress(Pipeline.from_config({"window": 20}).compress(array)), array)


def test_real_gradients_default_pipeline(grads):
    pipe = Pipeline.from_config()
    blob = pipe.compress(grads)
    assert same_bits(decompress(blob), grads)
    assert len(blob) < 0.9 * grads.nbytes  # the adaptive prior does compress real gradients


def test_large_multidimensional_array(grads):
    big = np.tile(grads, 40).reshape(8, 40, 1024)  # 327,680 floats, many windows and batches
    pipe = Pipeline.from_config({"batch": 64})
    assert same_bits(decompress(pipe.compress(big)), big)


def test_non_contiguous_and_big_endian_input(grads):
    strided = grads.reshape(64, 128)[::3, ::-2]
    assert not strided.flags.c_contiguous
    assert same_bits(decompress(Pipeline.from_config().compress(strided)), strided)
    big_endian = grads[:300].astype(">f4")
    back = decompress(Pipeline.from_config().compress(big_endian))
    assert back.dtype == np.dtype(">f4") and same_bits(back, big_endian)


def test_empty_and_zero_dimensional(grads):
    for arr in (np.zeros((0, 5), np.float32), np.float32(-0.0).reshape(()), np.array(np.nan)):
        assert same_bits(decompress(Pipeline.from_config().compress(arr)), arr)


def test_hex_layout_matches_the_paper():
    """``1.0, -0.5`` serialize to ``3f800000 bf000000 `` (most significant digit first)."""
    from lmgc_core.components import registry

    ser = registry.build("serializer", "hex")
    syms = ser.to_symbols(np.array([1.0, -0.5], dtype=np.float32))
    assert b"".join(ser.alphabet[s] for s in syms) == b"3f800000 bf000000 "
    ser = registry.build(
        "serializer", "hex", {"bytes_per_group": 1, "separator": ",", "prefix": "0x"}
    )
    syms = ser.to_symbols(np.array([1.0], dtype=np.float32))
    assert b"".join(ser.alphabet[s] for s in syms) == b"0x3f,0x80,0x00,0x00,"


@pytest.mark.parametrize(("serializer", "per_value"), [("hex", 8), ("iso", 4)])
@pytest.mark.parametrize("prior", ["float", "adaptive"])
def test_estimate_counts_the_data_symbols(serializer, per_value, prior):
    """Bits per symbol divide by the data symbols (8 hex digits or 4 bytes per float32), on
    the step path and on a prior's array path alike (the array path had multiplied by the
    alphabet's size: 1.27 bits per hex digit where 2.54 was right)."""
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    est = Pipeline.from_config({"prior": prior, "serializer": serializer}).estimate(x)
    assert est["free_symbols"] == per_value * x.size
    assert est["bits_per_symbol"] == pytest.approx(est["ideal_bits"] / (per_value * x.size))
