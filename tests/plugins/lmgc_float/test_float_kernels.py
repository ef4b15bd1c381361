"""The float prior's compiled kernels (``_float_kernels.c``, the only implementation): blocks of
fixed inputs must keep the bytes recorded here (written by the numba kernels this module
replaced, and by the C ones, equal; the committed stream fixtures guard the same from the other
side), every block decodes back bit for bit (NaN payloads, -0.0, infinities, subnormals, every
float and integer width), damaged blocks stay in bounds and bad calls are refused."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lmgc_float import codec, int_codec, kernels, tables
from lmgc_float.formats import FLOAT_FORMATS, FloatFormat

from lmgc_core.util.errors import PluginError

C = kernels.float_kernels()
C_INT = kernels.int_kernels()

DIGESTS = {
    "bfloat16 bits": "cca2fe030bc86e20",
    "float16 bits": "3fd805df416a8749",
    "float32 bits": "8a0f10b96eacec08",
    "float64 bits": "4f2e29d547aebaa9",
    "float8_e4m3fn bits": "cb59640baa89e213",
    "float8_e5m2 bits": "52fb5b297013e31a",
    "float32 gradients": "fddb9b7590654b97",
    "float64 gradients": "7b133e54091bb515",
    "float16 gradients": "e4fefdf40d0b848f",
    "bfloat16 gradients": "7fe24a394a91a8d3",
    "u1 random": "d5af60edb35ed7c3",
    "u1 levels": "db84e454a7cf89ea",
    "u1 runs": "32ca71385e1c85e7",
    "u2 random": "2bf94d2070374f15",
    "u2 levels": "71e71da8ce2c56ab",
    "u2 runs": "b2914e0a37b007f3",
    "u4 random": "bc3ef7a69ba4c5d5",
    "u4 levels": "f040269fb271a4ca",
    "u4 runs": "db5f4034dd6d0935",
    "u8 random": "c765382d5dfeb12f",
    "u8 levels": "411055990bb1cc9a",
    "u8 runs": "c3433d4c847c2498",
}


def _within(bits: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """``bits`` where the segments lie, zeros elsewhere: what a decode into zeros gives."""
    want = np.zeros_like(bits)
    for off, rows, cols in segs:
        want[off : off + rows * cols] = bits[off : off + rows * cols]
    return want


def _float_round_trip(bits: np.ndarray, segs: np.ndarray, fmt: FloatFormat) -> bytes:
    block = codec.encode_float_block(bits, segs, fmt)
    out = np.zeros_like(bits)
    codec.decode_float_block(block, out, segs, fmt)
    assert np.array_equal(out, _within(bits, segs)), "a float block decodes to other bits"
    return block


def _int_round_trip(bits: np.ndarray, segs: np.ndarray) -> bytes:
    """Both integer models' blocks (levels, then repeats), each decoded back."""
    n = int(segs[:, 1] @ segs[:, 2]) if len(segs) else 0
    blocks = int_codec._levels_block(bits, segs, n), int_codec._repeats_block(bits, segs, n)
    for block in blocks:
        out = np.zeros_like(bits)
        int_codec.decode_int_block(block, out, segs)
        assert np.array_equal(out, _within(bits, segs)), f"model {block[0]} decodes to other bits"
    return b"".join(blocks)


def test_coding_never_imports_numba():
    """Floats and integers code with the compiled kernels alone."""
    code = (
        "import sys, numpy as np\n"
        "from lmgc_core import Pipeline\n"
        "p = Pipeline.from_config({'prior': 'float'})\n"
        "for x in (np.linspace(-1, 1, 5000, dtype=np.float32).reshape(50, 100),\n"
        "          (np.arange(6000) % 7 * 3).astype(np.int16).reshape(60, 100)):\n"
        "    assert np.array_equal(p.decompress(p.compress(x, jobs=2)), x)\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_blocks_keep_their_reference_bytes(name):
    """Any change to a kernel that changes a block's bytes fails here (and, for what the
    fixtures cover, in test_fixtures): the format is these bytes, not the code."""
    bits, segs, fmt = reference_inputs()[name]
    if fmt is None:
        blocks = _int_round_trip(bits, segs)
    else:
        blocks = _float_round_trip(bits, segs, FLOAT_FORMATS[fmt])
    assert hashlib.sha256(blocks).hexdigest()[:16] == DIGESTS[name]


def test_real_gradients_compress(grads):
    x = np.ascontiguousarray(grads, dtype=np.float32).reshape(64, -1)
    rows, cols = x.shape
    segs = codec.seg_array([(0, rows // 2, cols), (rows // 2 * cols, rows - rows // 2, cols)])
    block = _float_round_trip(x.view(np.uint32).reshape(-1), segs, FLOAT_FORMATS["float32"])
    assert len(block) < 0.9 * x.nbytes


def test_quantized_gradients_compress(grads):
    g = np.asarray(grads, dtype=np.float64).reshape(64, -1)
    q = np.clip(np.round(g / (g.std() / 8)), -127, 127).astype(np.int16) + 128
    rows, cols = q.shape
    segs = codec.seg_array([(0, rows // 2, cols), (rows // 2 * cols, rows - rows // 2, cols)])
    for dt in ("u1", "u2", "u4", "u8"):
        bits = np.ascontiguousarray(q.astype(dt)).reshape(-1)
        assert len(int_codec.encode_int_block(bits, segs)) < 0.5 * bits.nbytes
        _int_round_trip(bits, segs)


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(sorted(FLOAT_FORMATS)), data=st.data())
def test_any_float_bits_round_trip(fmt, data):
    f = FLOAT_FORMATS[fmt]
    rows = data.draw(st.integers(0, 9), label="rows")
    cols = data.draw(st.integers(0, 40), label="cols")
    # a last segment of another width: the column state of one segment must not leak into the
    # next, whether the earlier one had a single row (the kernel then leaves it untouched)
    rows2 = data.draw(st.integers(0, 4), label="rows2")
    cols2 = data.draw(st.integers(0, 60), label="cols2")
    n = rows * cols + rows2 * cols2 + data.draw(st.integers(0, 5), label="spare")
    top = (1 << f.width) - 1
    special = [0, 1, top, 1 << (f.width - 1), ((1 << f.exponent_bits) - 1) << f.mantissa_bits]
    values = data.draw(
        st.lists(st.one_of(st.integers(0, top), st.sampled_from(special)), min_size=n, max_size=n),
        label="values",
    )
    bits = np.array(values, dtype=np.uint64).astype(f.uint)
    cut = data.draw(st.integers(0, rows), label="cut")
    segs = codec.seg_array(
        ([(0, cut, cols), (cut * cols, rows - cut, cols)] if rows else [(0, 0, cols)])
        + [(rows * cols, rows2, cols2)]
    )
    _float_round_trip(bits, segs, f)


@settings(max_examples=80, deadline=None)
@given(dt=st.sampled_from(["u1", "u2", "u4", "u8"]), kind=st.integers(0, 3), data=st.data())
def test_any_ints_round_trip(dt, kind, data):
    """Random items, few levels around a centre, repeated rows and periodic runs (the match
    model), over segments of other shapes."""
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
    _int_round_trip(bits, segs)


def test_damaged_blocks_stay_in_bounds():
    """A decoder fed noise reads zeros past the end and clamps every symbol: no crash, no
    write outside the output, the same garbage every time (the stream's checksum then reports
    it), or the same ValueError once its values outrun its bytes."""
    rng = np.random.default_rng(3)
    fmt = FLOAT_FORMATS["float32"]
    segs = codec.seg_array([(0, 20, 50)])

    def ints(b: bytes, o: np.ndarray) -> None:
        int_codec.decode_int_block(b, o, segs)

    def floats(b: bytes, o: np.ndarray) -> None:
        codec.decode_float_block(b, o, segs, fmt)

    for size in (0, 3, 4, 10, 500):
        noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        levels = int_codec._INT_HEAD.pack(int_codec.LEVELS, 1 << 63, min(size, 7))
        for dt, block, decode in [
            ("u4", min(size, 7).to_bytes(4, "little") + noise, floats),
            ("u1", bytes([int_codec.REPEATS]) + noise, ints),
            ("u8", bytes([int_codec.REPEATS]) + noise, ints),
            ("u2", levels + noise, ints),
        ]:
            outs = []
            for _ in range(2):
                out = np.zeros(1000 + 8, dtype=dt)
                try:
                    decode(block, out[:1000])
                except ValueError as err:
                    assert "past the end" in str(err)
                assert not out[1000:].any()
                outs.append(out)
            assert np.array_equal(outs[0], outs[1])


def test_bad_calls_are_refused_not_run():
    """The kernels check their arguments: a segment outside the values, a layout that is not a
    float's or a model too small raises instead of reading or writing out of bounds."""
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


@pytest.mark.parametrize("items", ["V2", "V4", "V8"])
def test_misaligned_opaque_items_are_copied_too(grads, items):
    """numpy counts |V2 items (a bfloat16 .npy read back) as aligned at any address: they
    reached the kernels misaligned, a ValueError."""
    from lmgc_core import Pipeline

    data = grads.tobytes()
    odd = np.frombuffer(b"x" + data, dtype=items, offset=1)
    assert odd.ctypes.data % 2 and odd.flags.aligned
    for level in (1, 2):
        pipe = Pipeline.from_config({"prior": "float", "level": level})
        back = pipe.decompress(pipe.compress(odd))
        assert back.dtype == odd.dtype and back.tobytes() == data


# -- fixed inputs whose blocks the kernels must reproduce ---------------------------------------
def _mix(seed: int, n: int) -> np.ndarray:
    """``n`` pseudo-random 64-bit words (splitmix64): the same on every machine and numpy."""
    with np.errstate(over="ignore"):
        z = (np.arange(1, n + 1, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def reference_inputs() -> dict[str, tuple[np.ndarray, np.ndarray, str | None]]:
    """Name -> (bits, segments, float format or None for the integer models): raw bit patterns
    of every float width (a seventh of them special: zeros, -0.0, infinities, NaN payloads,
    subnormals), real gradients, and integers of every width as random items, quantizer levels
    and repeated runs; each over two segments of other shapes."""
    from tests.conftest import DATA

    g = np.load(DATA / "mlp_grads_8k.npy").astype(np.float32)
    segs = codec.seg_array([(0, 37, 61), (37 * 61, 5, 113)])
    n = 37 * 61 + 5 * 113
    out: dict[str, tuple[np.ndarray, np.ndarray, str | None]] = {}
    for i, name in enumerate(sorted(FLOAT_FORMATS)):
        f = FLOAT_FORMATS[name]
        top = (1 << f.width) - 1
        words = _mix(i, n) & np.uint64(top)
        special = np.array(
            [0, 1, top, 1 << (f.width - 1), ((1 << f.exponent_bits) - 1) << f.mantissa_bits],
            dtype=np.uint64,
        )
        pick = (_mix(100 + i, n) % np.uint64(7)) == 0
        words[pick] = special[(_mix(200 + i, n) % np.uint64(5))[pick].astype(np.intp)]
        out[f"{name} bits"] = (words.astype(f.uint), segs, name)
    grads = {
        "float32": g.view(np.uint32),
        "float64": g.astype(np.float64).view(np.uint64),
        "float16": g.astype(np.float16).view(np.uint16),
        "bfloat16": (g.view(np.uint32) >> 16).astype(np.uint16),
    }
    gsegs = codec.seg_array([(0, 64, 100), (6400, 12, 149)])
    for name, bits in grads.items():
        out[f"{name} gradients"] = (np.ascontiguousarray(bits[:8188]), gsegs, name)
    q = np.clip(np.round(g / (g.std() / 8)), -127, 127).astype(np.int64)
    for dt in ("u1", "u2", "u4", "u8"):
        top = (1 << (8 * np.dtype(dt).itemsize)) - 1
        centre = 128 if dt == "u1" else top - 3  # levels that wrap around the item's width
        out[f"{dt} random"] = (_mix(300, n).astype(dt), segs, None)
        with np.errstate(over="ignore"):
            levels = q[:n].astype(np.uint64) + np.uint64(centre)  # modulo 2**64, then the width
        out[f"{dt} levels"] = (levels.astype(dt), segs, None)
        period = (_mix(400, 29) % np.uint64(4)).astype(dt)
        runs = np.resize(period, n)
        runs[(_mix(500, n) % np.uint64(13)) == 0] ^= 1
        out[f"{dt} runs"] = (runs, segs, None)
    return out


def test_a_stale_or_mismatched_build_is_refused(monkeypatch):
    """A build of other kernels (an old ``KERNEL_VERSION``) or other model constants than
    :mod:`tables` makes the prior fail with a clear error instead of writing other bytes."""
    want = kernels.KERNEL_VERSION
    try:
        kernels._module.cache_clear()
        monkeypatch.setattr(kernels, "KERNEL_VERSION", want + 1)
        with pytest.raises(PluginError, match=f"version {want}, this code needs {want + 1}"):
            kernels._module()
        monkeypatch.setattr(kernels, "KERNEL_VERSION", want)
        monkeypatch.setattr(tables, "TREE_CONTEXTS", tables.TREE_CONTEXTS + 1)
        with pytest.raises(PluginError, match="other constants: rebuild"):
            kernels._module()
    finally:
        kernels._module.cache_clear()


def test_repeat_models_are_fresh_on_every_call_and_per_thread():
    """The repeat models (2-10 MB) are one working set per thread and item size, copied over
    from a pristine one at each call (built anew, they cost 2-4 ms a block: a forged stream of
    many tiny int64 blocks decoded for minutes): each call must give exactly fresh models, and
    two threads never the same arrays."""
    import threading

    def flat(models):
        return [a for m in models for a in (flat(m) if isinstance(m, tuple) else [m])]

    fresh = [a.copy() for a in flat(tables._fresh_repeat_models(8))]
    first = flat(tables.repeat_models(8))
    for a in first:
        a.reshape(-1)[:: max(1, a.size // 7)] = 12345  # what coding a block leaves behind
    again = flat(tables.repeat_models(8))
    assert all(x is y for x, y in zip(first, again, strict=True))  # the same working set
    assert all(np.array_equal(x, y) for x, y in zip(again, fresh, strict=True))
    other: list = []
    thread = threading.Thread(target=lambda: other.extend(flat(tables.repeat_models(8))))
    thread.start()
    thread.join()
    assert not any(np.shares_memory(x, y) for x, y in zip(again, other, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(other, fresh, strict=True))
