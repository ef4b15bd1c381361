"""The float model's two kernel sets: the compiled one (``_float_kernels.c``) and numba's must
produce the same bytes and read each other's blocks, on real gradients and on raw bit patterns
(NaN payloads, -0.0, infinities, subnormals) of every float width; a process picks one."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmgc_float import codec, kernels, tables
from lmgc_float.formats import FLOAT_FORMATS, FloatFormat

C = kernels.compiled()
NUMBA = kernels.numba_kernels()


@pytest.fixture
def use(monkeypatch):
    """``use(k)``: the float codec runs with kernel set ``k`` until the test ends."""

    def pick(k: kernels.FloatKernels) -> None:
        monkeypatch.setattr(codec, "float_kernels", lambda: k)

    return pick


def _both(use, bits: np.ndarray, segs: np.ndarray, fmt: FloatFormat) -> list[bytes]:
    """The block each kernel set writes; each set decodes both blocks back to ``bits``."""
    blocks = []
    for k in (C, NUMBA):
        use(k)
        blocks.append(codec.encode_float_block(bits, segs, fmt))
    want = np.zeros_like(bits)
    for off, rows, cols in segs:
        want[off : off + rows * cols] = bits[off : off + rows * cols]
    for k in (C, NUMBA):
        use(k)
        for block in blocks:
            out = np.zeros_like(bits)
            codec.decode_float_block(block, out, segs, fmt)
            assert np.array_equal(out, want), f"{k.name} kernels misread a block"
    return blocks


def test_the_compiled_kernels_are_built_and_chosen():
    """``pip install`` builds them (the numba fallback is only for machines without a C
    compiler); a process that codes floats with them never imports numba."""
    assert kernels.float_kernels().name == "c"
    code = (
        "import sys, numpy as np\n"
        "from lmgc_core import Pipeline\n"
        "x = np.linspace(-1, 1, 5000, dtype=np.float32).reshape(50, 100)\n"
        "p = Pipeline.from_config({'prior': 'float'})\n"
        "assert np.array_equal(p.decompress(p.compress(x, jobs=2)), x)\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_environment_picks_the_kernels(monkeypatch):
    kernels.float_kernels.cache_clear()
    try:
        monkeypatch.setenv(kernels.ENV, "numba")
        assert kernels.float_kernels().name == "numba"
        kernels.float_kernels.cache_clear()
        monkeypatch.setenv(kernels.ENV, "fortran")
        with pytest.raises(ValueError, match="use 'c' or 'numba'"):
            kernels.float_kernels()
    finally:
        kernels.float_kernels.cache_clear()


def test_same_bytes_on_real_gradients(use, grads):
    x = np.ascontiguousarray(grads, dtype=np.float32).reshape(64, -1)
    rows, cols = x.shape
    segs = codec.seg_array([(0, rows // 2, cols), (rows // 2 * cols, rows - rows // 2, cols)])
    blocks = _both(use, x.view(np.uint32).reshape(-1), segs, FLOAT_FORMATS["float32"])
    assert blocks[0] == blocks[1]
    assert len(blocks[0]) < 0.9 * x.nbytes  # and it compresses


@settings(  # ``use`` only patches a name: safe to share between examples
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(sorted(FLOAT_FORMATS)),
    data=st.data(),
)
def test_same_bytes_on_any_bits(use, fmt, data):
    f = FLOAT_FORMATS[fmt]
    rows = data.draw(st.integers(0, 9), label="rows")
    cols = data.draw(st.integers(0, 40), label="cols")
    # a last segment of another width: the column state of one segment must not leak into the
    # next, whether the earlier one had a single row (the C kernel then leaves it untouched)
    rows2 = data.draw(st.integers(0, 4), label="rows2")
    cols2 = data.draw(st.integers(0, 60), label="cols2")
    n = rows * cols + rows2 * cols2 + data.draw(st.integers(0, 5), label="spare")
    uint = f.uint
    top = (1 << f.width) - 1
    special = [0, 1, top, 1 << (f.width - 1), ((1 << f.exponent_bits) - 1) << f.mantissa_bits]
    values = data.draw(
        st.lists(st.one_of(st.integers(0, top), st.sampled_from(special)), min_size=n, max_size=n),
        label="values",
    )
    bits = np.array(values, dtype=np.uint64).astype(uint)
    cut = data.draw(st.integers(0, rows), label="cut")
    segs = codec.seg_array(
        ([(0, cut, cols), (cut * cols, rows - cut, cols)] if rows else [(0, 0, cols)])
        + [(rows * cols, rows2, cols2)]
    )
    blocks = _both(use, bits, segs, f)
    assert blocks[0] == blocks[1]


def test_damaged_blocks_decode_alike_and_stay_in_bounds(use):
    """A decoder fed noise reads zeros past the end and clamps every symbol: no crash, no
    write outside the output, and both kernel sets make the same garbage (the stream's
    checksum then reports it)."""
    rng = np.random.default_rng(3)
    fmt = FLOAT_FORMATS["float32"]
    segs = codec.seg_array([(0, 20, 50)])
    for size in (0, 3, 4, 10, 500):
        noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        block = (min(size, 7)).to_bytes(4, "little") + noise
        outs = []
        for k in (C, NUMBA):
            use(k)
            out = np.zeros(1000 + 8, dtype=np.uint32)
            codec.decode_float_block(block, out[:1000], segs, fmt)
            assert not out[1000:].any()
            outs.append(out)
        assert np.array_equal(outs[0], outs[1])


def test_bad_calls_are_refused_not_run():
    """The compiled kernels check what the numba ones trust: a segment outside the values or a
    layout that is not a float's raises instead of reading or writing out of bounds."""
    vals = np.zeros(100, dtype=np.int32)
    models = tables.float_models()

    def call(segs, width=32, ebits=8, mbits=23):
        return C.encode_segments(
            vals, np.asarray(segs, dtype=np.int64).reshape(-1, 3), width, ebits, mbits,
            tables.encoder_state(), np.zeros(1 << 16, np.uint8), np.zeros(3, np.int64),
            np.zeros(1 << 16, np.uint8), *models,
        )  # fmt: skip

    assert call([(0, 10, 10)]) is True
    with pytest.raises(ValueError, match="outside"):
        call([(1, 10, 10)])
    with pytest.raises(ValueError, match="outside"):
        call([(-1, 1, 1)])
    with pytest.raises(ValueError, match="layout"):
        call([(0, 1, 1)], ebits=9)
    with pytest.raises(ValueError, match="width"):
        call([(0, 1, 1)], width=24)


def test_a_misaligned_array_codes_like_an_aligned_one(grads):
    """Arrays unpickled by Dask workers or read from a buffer at an odd offset are misaligned:
    they are copied for the kernels, never misread."""
    from lmgc_core import Pipeline

    raw = bytearray(grads.nbytes + 1)
    misaligned = np.frombuffer(raw, dtype=np.float32, offset=1, count=grads.size)
    misaligned[:] = grads
    assert not misaligned.flags.aligned
    pipe = Pipeline.from_config({"prior": "float"})
    blob = pipe.compress(misaligned.reshape(64, -1))
    assert blob == pipe.compress(grads.reshape(64, -1))
    assert pipe.decompress(blob).tobytes() == grads.tobytes()
