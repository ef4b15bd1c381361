"""The ``float`` prior: bit-exact round trips over dtypes, shapes and layouts, block cutting,
thread-count independence, the digit path, and damaged blocks that reach the kernels."""

from __future__ import annotations

import json
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lmgc_core import LMGCError, Pipeline, decompress, read_header
from lmgc_core.stream.container import pack, unpack
from tests.conftest import same_bits

MLP_LAYOUT = [[256, 64], [256], [256, 256], [256], [10, 256], [10]]
FLOATS = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
INTS = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint64, np.bool_]
FP8 = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def _float_pipe(**options) -> Pipeline:
    return Pipeline.from_config({"prior": {"name": "float", **options}})


def _from_bits(dtype, shape):
    """Arrays of ``dtype`` drawn as raw bit patterns: NaN payloads, -0.0, infinities,
    subnormals, plus runs of zeros and repeats (what the context models key on)."""
    dtype = np.dtype(dtype)
    uint = np.dtype(f"u{dtype.itemsize}")
    elements = st.one_of(
        st.integers(0, np.iinfo(uint).max),
        st.just(0),
        st.sampled_from([0, 1, np.iinfo(uint).max, 1 << (8 * dtype.itemsize - 1)]),
    )
    return hnp.arrays(uint, shape, elements=elements).map(lambda a: a.view(dtype))


shapes = st.one_of(
    st.just(()),
    hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=300),
    hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=19),
)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(FLOATS + INTS + FP8), shape=shapes)
def test_round_trip_any_dtype_and_shape(data, dtype, shape):
    arr = data.draw(_from_bits(dtype, shape))
    block = data.draw(st.sampled_from([1, 7, 64, 1 << 20]))
    pipe = _float_pipe(block_values=block)
    back = decompress(pipe.compress(arr))
    assert same_bits(back, arr)


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    layout=st.lists(hnp.array_shapes(min_dims=1, max_dims=2, max_side=9), min_size=1, max_size=4),
    snapshots=st.integers(1, 3),
)
def test_round_trip_flat_vectors_with_a_layout(data, layout, snapshots):
    total = sum(int(np.prod(s)) for s in layout)
    arr = data.draw(_from_bits(np.float32, (snapshots, total)))
    pipe = _float_pipe(layout=[list(s) for s in layout], block_values=16)
    blob = pipe.compress(arr)
    assert same_bits(decompress(blob), arr)
    (part,) = read_header(blob)["parts"]  # a few values that its blocks would expand: stored
    assert part["coding"] == "stored" or part["array"]["layout"] is True


def test_a_layout_that_does_not_fit_is_ignored_not_an_error(grads):
    arr = grads[:1000]
    blob = _float_pipe(layout=MLP_LAYOUT).compress(arr)
    assert read_header(blob)["parts"][0]["array"]["layout"] is False
    assert same_bits(decompress(blob), arr)


def test_layout_and_shape_are_used_on_real_gradients(mlp_rows):
    """The row/column contexts must earn their keep: the same bytes compress better with the
    parameter shapes than as a flat vector, and both beat 70 % (the adaptive prior: ~69 %)."""
    flat = len(_float_pipe().compress(mlp_rows.reshape(-1)))
    shaped = len(_float_pipe(layout=MLP_LAYOUT).compress(mlp_rows))
    assert shaped < flat < 0.70 * mlp_rows.nbytes


def test_thread_count_does_not_change_the_bytes(grads):
    arr = np.tile(grads, 40).reshape(8, -1)
    pipe = _float_pipe(block_values=4096)
    one, two = pipe.compress(arr, jobs=1), pipe.compress(arr, jobs=2)
    assert one == two
    assert len(unpack(one).blocks) == 8  # one block per row: rows are longer than a block
    assert same_bits(pipe.decompress(one, jobs=2), arr)


def test_quantized_and_sparsified_parts_use_the_integer_model(grads):
    pipe = Pipeline.from_config(
        {"stages": [{"name": "sparsify", "keep": 0.25}, {"name": "quantize", "bits": 8}]}
    )
    blob = pipe.compress(grads)
    models = {p["name"]: p["array"]["model"] for p in read_header(blob)["parts"]}
    assert set(models.values()) == {"int"}
    assert same_bits(decompress(blob), pipe.reconstruct(grads))


def test_the_header_records_the_model_and_a_mismatch_is_refused(grads):
    blob = _float_pipe(layout=MLP_LAYOUT).compress(grads[:2000])
    assert read_header(blob)["prior"]["prior"] == "float"
    with pytest.raises(LMGCError, match="layout"):
        _float_pipe().decompress(blob)


def _rewrite_block(blob: bytes, index: int, new: bytes) -> bytes:
    """Replace one block and fix its length and CRC, so the damage reaches the decoder."""
    box = unpack(blob)
    box.blocks[index] = new
    k = 0
    for part in box.header["parts"]:
        for entry in part["blocks"]:
            if k == index:
                entry[0], entry[1] = len(new), zlib.crc32(new)
            k += 1
    return pack(json.loads(json.dumps(box.header)), box.blocks)


@pytest.mark.parametrize("stages", [[], [{"name": "quantize", "bits": 8}]])
def test_damaged_blocks_that_pass_their_crc_give_a_clear_error(grads, stages):
    pipe = Pipeline.from_config({"stages": stages, "prior": {"name": "float", "block_values": 700}})
    blob = pipe.compress(grads[:3000].reshape(30, 100))
    n_blocks = len(unpack(blob).blocks)
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(150):
        index = int(rng.integers(n_blocks))
        block = bytearray(unpack(blob).blocks[index])
        kind = trial % 4
        if kind == 0 and block:
            block[int(rng.integers(len(block)))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            block = block[: int(rng.integers(len(block) + 1))]
        elif kind == 2:
            block += bytes(rng.integers(0, 256, 9, dtype=np.uint8))
        else:
            block = bytearray(rng.integers(0, 256, len(block), dtype=np.uint8))
        damaged = _rewrite_block(blob, index, bytes(block))
        try:
            back = decompress(damaged)
        except LMGCError as exc:
            outcomes.add(type(exc).__name__)
            continue
        assert same_bits(back, pipe.reconstruct(grads[:3000].reshape(30, 100)))
        outcomes.add("exact")
    assert "ChecksumError" in outcomes


def test_digit_path_round_trips_over_hex_and_refuses_other_alphabets(grads):
    """As a symbol-level expert (what a mixture uses) the prior codes hex digits exactly."""
    from lmgc_float.prior import FloatPrior

    from lmgc_core.components import registry

    arr = grads[:4000]
    pipe = Pipeline(
        registry.build("serializer", "hex", {}),
        _StepsOnly(FloatPrior()),
        registry.build("coder", "range", {}),
        window=64,
    )
    blob = pipe.compress(arr)
    assert read_header(blob)["parts"][0].get("coding", "steps") == "steps"
    assert same_bits(pipe.decompress(blob), arr)
    assert len(blob) < arr.nbytes  # it models the digits, it does not just pass them
    with pytest.raises(LMGCError, match="hex"):
        FloatPrior().open([bytes([i]) for i in range(256)], 1, 64)


class _StepsOnly:
    """The float prior seen through its symbol interface only (as a mixture sees an expert)."""

    def __new__(cls, prior):
        from lmgc_core.components.interfaces import Prior

        class StepsOnly(Prior):
            name = "float"
            default_window = prior.default_window
            default_batch_size = prior.default_batch_size
            thread_safe = True

            def get_config(self):
                return prior.get_config()

            def fingerprint(self):
                return prior.fingerprint()

            def open(self, alphabet, batch_size, window, pattern=(-1,)):
                return prior.open(alphabet, batch_size, window, pattern)

        return StepsOnly()
