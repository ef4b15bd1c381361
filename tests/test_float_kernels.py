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
from lmgc_float import codec, int_codec, kernels, tables
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


# -- the integer models (int_codec: levels and repeats) ----------------------------------------
C_INT = kernels.compiled_int()
NUMBA_INT = kernels.numba_int_kernels()


def _both_int(monkeypatch, bits: np.ndarray, segs: np.ndarray) -> list[tuple[bytes, bytes]]:
    """Each kernel set's level and repeat blocks; each set decodes every block to ``bits``."""
    n = int(segs[:, 1] @ segs[:, 2]) if len(segs) else 0
    blocks = []
    for k in (C_INT, NUMBA_INT):
        monkeypatch.setattr(int_codec, "int_kernels", lambda k=k: k)
        blocks.append(
            (int_codec._levels_block(bits, segs, n), int_codec._repeats_block(bits, segs, n))
        )
    want = np.zeros_like(bits)
    for off, rows, cols in segs:
        want[off : off + rows * cols] = bits[off : off + rows * cols]
    for k in (C_INT, NUMBA_INT):
        monkeypatch.setattr(int_codec, "int_kernels", lambda k=k: k)
        for block in blocks[0] + blocks[1]:
            out = np.zeros_like(bits)
            int_codec.decode_int_block(block, out, segs)
            assert np.array_equal(out, want), f"{k.name} integer kernels misread a block"
    return blocks


def test_the_compiled_integer_kernels_are_chosen_and_numba_stays_out():
    """Integer inputs (quantizer indices, bytes) code with the compiled kernels too: a process
    that codes them never imports numba."""
    assert kernels.int_kernels().name == "c"
    code = (
        "import sys, numpy as np\n"
        "from lmgc_core import Pipeline\n"
        "x = (np.arange(6000) % 7 * 3).astype(np.int16).reshape(60, 100)\n"
        "p = Pipeline.from_config({'prior': 'float'})\n"
        "assert np.array_equal(p.decompress(p.compress(x, jobs=2)), x)\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_same_integer_bytes_on_quantized_gradients(monkeypatch, grads):
    g = np.asarray(grads, dtype=np.float64).reshape(64, -1)
    q = np.clip(np.round(g / (g.std() / 8)), -127, 127).astype(np.int16) + 128
    for dt in ("u1", "u2", "u4", "u8"):
        bits = np.ascontiguousarray(q.astype(dt)).reshape(-1)
        rows, cols = q.shape
        segs = codec.seg_array([(0, rows // 2, cols), (rows // 2 * cols, rows - rows // 2, cols)])
        blocks = _both_int(monkeypatch, bits, segs)
        assert blocks[0] == blocks[1]
        assert min(map(len, blocks[0])) < 0.5 * bits.nbytes  # and it compresses


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dt=st.sampled_from(["u1", "u2", "u4", "u8"]), kind=st.integers(0, 3), data=st.data())
def test_same_integer_bytes_on_any_ints(monkeypatch, dt, kind, data):
    """Random items, few levels around a centre, repeated rows and periodic runs (the match
    model), over two or three segments of other shapes."""
    width = 8 * np.dtype(dt).itemsize
    rows = data.draw(st.integers(0, 9), label="rows")
    cols = data.draw(st.integers(0, 70), label="cols")
    rows2 = data.draw(st.integers(0, 4), label="rows2")
    cols2 = data.draw(st.integers(0, 90), label="cols2")
    n = rows * cols + rows2 * cols2 + data.draw(st.integers(0, 5), label="spare")
    top = (1 << width) - 1
    if kind == 0:
        special = [0, 1, top, 1 << (width - 1), (1 << (width - 1)) - 1]
        item = st.one_of(st.integers(0, top), st.sampled_from(special))
    elif kind == 1:
        centre = data.draw(st.sampled_from([0, 7, 128, top]), label="centre")
        item = st.integers(-3, 3).map(lambda d: (centre + d) & top)
    else:
        item = st.integers(0, 3)
    values = data.draw(st.lists(item, min_size=n, max_size=n), label="values")
    if kind == 3:  # a short pattern repeated: long matches
        period = data.draw(st.integers(1, 9), label="period")
        values = [values[i % period] if i % 11 else values[i] for i in range(n)]
    bits = np.array(values, dtype=np.uint64).astype(dt)
    cut = data.draw(st.integers(0, rows), label="cut")
    segs = codec.seg_array(
        ([(0, cut, cols), (cut * cols, rows - cut, cols)] if rows else [(0, 0, cols)])
        + [(rows * cols, rows2, cols2)]
    )
    blocks = _both_int(monkeypatch, bits, segs)
    assert blocks[0] == blocks[1]


def test_damaged_integer_blocks_decode_alike_and_stay_in_bounds(monkeypatch):
    rng = np.random.default_rng(5)
    segs = codec.seg_array([(0, 20, 50)])
    for dt in ("u1", "u2", "u8"):
        for size in (0, 3, 4, 10, 500):
            noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            head = int_codec._INT_HEAD.pack(
                int_codec.LEVELS, int(rng.integers(0, 1 << 63)), min(size, 7)
            )
            for block in (bytes([int_codec.REPEATS]) + noise, head + noise):
                outs = []
                for k in (C_INT, NUMBA_INT):
                    monkeypatch.setattr(int_codec, "int_kernels", lambda k=k: k)
                    out = np.zeros(1000 + 8, dtype=dt)
                    int_codec.decode_int_block(block, out[:1000], segs)
                    assert not out[1000:].any()
                    outs.append(out)
                assert np.array_equal(outs[0], outs[1])


def test_bad_integer_calls_are_refused_not_run():
    vals = np.zeros(100, dtype=np.int16)

    def call(segs, itemsize=2, models=None):
        return C_INT.encode_ints(
            vals, np.asarray(segs, dtype=np.int64).reshape(-1, 3), itemsize,
            tables.encoder_state(), np.zeros(1 << 16, np.uint8),
            *(models or tables.repeat_models(itemsize)),
        )  # fmt: skip

    assert call([(0, 10, 10)]) is True
    with pytest.raises(ValueError, match="outside"):
        call([(1, 10, 10)])
    with pytest.raises(ValueError, match="width"):
        call([(0, 1, 1)], itemsize=3)
    with pytest.raises(ValueError, match="byte counts"):
        call([(0, 1, 1)], models=tables.repeat_models(1))
    with pytest.raises(ValueError, match="outside"):
        C_INT.encode_levels(
            vals, np.asarray([(0, 11, 10)], dtype=np.int64), 16, 0, tables.encoder_state(),
            np.zeros(1 << 16, np.uint8), np.zeros(3, np.int64), np.zeros(1 << 16, np.uint8),
            *tables.level_models(),
        )  # fmt: skip
