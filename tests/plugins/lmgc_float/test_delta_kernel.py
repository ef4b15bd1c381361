"""The float prior's delta model (``lmgc_float.delta``): a tensor coded against a base of the
same dtype and shape decodes back bit for bit for every bit pattern (NaN payloads, sign changes,
zeros, subnormals, infinities) at both levels and every dtype; a damaged or truncated block, or
another base, is refused with an lmgc error."""

from __future__ import annotations

import contextlib
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lmgc_float import delta

from lmgc_core.util.errors import ChecksumError, LMGCError, MismatchError, StreamError
from tests.paths import TESTS_DIR

DTYPES = [
    np.dtype(np.float32),
    np.dtype(ml_dtypes.bfloat16),
    np.dtype(np.float16),
    np.dtype(np.float64),
    np.dtype(ml_dtypes.float8_e4m3fn),
    np.dtype(np.int8),
    np.dtype(np.uint16),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.bool_),
]
LEVELS = [1, 2]
GRADS = TESTS_DIR / "data" / "mlp_grads_8k.npy"


def _specials(dtype: np.dtype) -> np.ndarray:
    """Bit patterns every float coder must keep: +-0, +-inf, NaNs with payloads, subnormals,
    the largest and smallest normal numbers (as raw bits of ``dtype``'s width)."""
    if dtype.kind not in "fV":
        return np.array([], dtype=f"u{dtype.itemsize}")
    w = 8 * dtype.itemsize
    fin = ml_dtypes.finfo(dtype) if dtype.kind == "V" else np.finfo(dtype)
    sign = 1 << (w - 1)
    vals = np.array([0, np.inf, np.nan, fin.max, fin.tiny, fin.smallest_subnormal], dtype=dtype)
    bits = [int(b) for b in vals.view(f"u{dtype.itemsize}")]
    bits += [b | sign for b in bits] + [(1 << w) - 1, sign | 1, 1, sign - 1]
    return np.array(bits, dtype=np.uint64).astype(f"u{dtype.itemsize}")


def _round_trip(
    new: np.ndarray, base: np.ndarray, shape: tuple[int, ...], level: int, jobs: int = 1
) -> list[bytes]:
    meta, blocks = delta.encode(new, base, shape, level, jobs)
    got = delta.decode(meta, blocks, base, new.dtype, shape, jobs)
    assert got.dtype == new.dtype
    assert got.tobytes() == new.tobytes()
    return blocks


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int]:
    dtype = draw(st.sampled_from(DTYPES))
    rows = draw(st.integers(0, 9))
    cols = draw(st.integers(1, 40))
    n = rows * cols
    u = np.dtype(f"u{dtype.itemsize}")
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).view(u).copy()
    pool = np.concatenate([_specials(dtype), base[:8]])
    if len(pool) and n:
        pick = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 1.0]))
        base[pick] = rng.choice(pool, int(pick.sum()))
    how = draw(st.sampled_from(["random", "near", "same", "specials", "sign"]))
    if how == "random":
        new = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).view(u).copy()
    elif how == "near":  # a few ulps away, wrapping at the ends of the range
        new = base + rng.integers(-3, 4, n).astype(u)
    elif how == "same":
        new = base.copy()
    elif how == "sign":
        new = base ^ u.type(1 << (8 * dtype.itemsize - 1))
    else:
        new = rng.choice(pool, n) if len(pool) else base.copy()
    if dtype == np.bool_:  # numpy's bools are 0 or 1 bytes
        new, base = new & 1, base & 1
    return new.view(dtype), base.view(dtype), (rows, cols), draw(st.sampled_from(LEVELS))


@settings(max_examples=150, deadline=None)
@given(_pairs())
def test_round_trip_every_bit_pattern(case) -> None:
    new, base, shape, level = case
    _round_trip(new, base, shape, level)


@pytest.mark.parametrize("dtype", DTYPES[:5], ids=str)
@pytest.mark.parametrize("level", LEVELS)
def test_specials_against_each_other(dtype: np.dtype, level: int) -> None:
    """Every special value against every other (and itself), in both directions."""
    sp = _specials(dtype)
    new = np.repeat(sp, len(sp)).view(dtype)
    base = np.tile(sp, len(sp)).view(dtype)
    _round_trip(new, base, (len(sp), len(sp)), level)
    _round_trip(base, new, (len(sp) * len(sp),), level)


def _checkpoints(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Real gradients as weights and one small update of them (a checkpoint pair)."""
    g = np.load(GRADS).astype(np.float32)
    w = (g * np.float32(100)).astype(dtype)
    step = np.sign(np.roll(g, 1)) * np.float32(1e-3) * np.abs(w.astype(np.float32))
    return (w.astype(np.float32) - step).astype(dtype), w


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16)], ids=str)
@pytest.mark.parametrize("level", LEVELS)
def test_small_updates_code_smaller_than_the_values(dtype: np.dtype, level: int) -> None:
    new, base = _checkpoints(dtype)
    blocks = _round_trip(new, base, (64, 128), level, jobs=2)
    assert sum(map(len, blocks)) < 0.6 * new.nbytes


def test_blocks_do_not_depend_on_threads() -> None:
    new, base = _checkpoints(np.dtype(np.float32))
    new, base = np.tile(new, 130), np.tile(base, 130)
    for level in LEVELS:
        one = delta.encode(new, base, (1040, 1024), level, 1)
        two = delta.encode(new, base, (1040, 1024), level, 2)
        assert len(one[1]) > 1
        assert one == two
        back = delta.decode(*one, base, new.dtype, (1040, 1024), jobs=3)
        assert back.tobytes() == new.tobytes()


@pytest.mark.parametrize("level", LEVELS)
def test_another_base_is_refused(level: int) -> None:
    new, base = _checkpoints(np.dtype(np.float32))
    meta, blocks = delta.encode(new, base, (64, 128), level)
    other = base.copy()
    other[77] = np.nextafter(other[77], np.float32(np.inf))
    with pytest.raises(ChecksumError):
        delta.decode(meta, blocks, other, new.dtype, (64, 128))
    with pytest.raises(MismatchError):
        delta.decode(meta, blocks, base[:-1], new.dtype, (64, 128))
    with pytest.raises(MismatchError):
        delta.decode(meta, blocks, base.astype(np.float64), new.dtype, (64, 128))
    with pytest.raises(MismatchError):
        delta.encode(new, base[:-1], (64, 128), level)


@pytest.mark.parametrize("level", LEVELS)
def test_damaged_blocks_are_refused(level: int) -> None:
    new, base = _checkpoints(np.dtype(np.float32))
    shape = (64, 128)
    meta, blocks = delta.encode(new, base, shape, level)
    (block,) = blocks
    rng = np.random.default_rng(5)
    cuts = sorted({0, 1, 5, 17, len(block) // 2, len(block) - 1, *rng.integers(0, len(block), 20)})
    for cut in cuts:
        with pytest.raises(StreamError):
            delta.decode(meta, [block[:cut]], base, new.dtype, shape)
    assert block[0] == delta.ULP
    with pytest.raises(StreamError):
        delta.decode(meta, [block + b"\0"], base, new.dtype, shape)
    refused = 0
    for pos in rng.integers(0, len(block), 60):
        bad = bytearray(block)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            got = delta.decode(meta, [bytes(bad)], base, new.dtype, shape)
        except LMGCError:
            refused += 1
        else:  # a flip the coder cannot see must still give the exact values
            assert got.tobytes() == new.tobytes()
    assert refused >= 55
    with pytest.raises(StreamError):
        delta.decode(meta, [], base, new.dtype, shape)
    with pytest.raises(StreamError):
        delta.decode({**meta, "version": 99}, blocks, base, new.dtype, shape)
    with pytest.raises(StreamError):
        delta.decode({"shape": [3]}, blocks, base, new.dtype, shape)


@pytest.mark.parametrize("level", LEVELS)
def test_each_block_kind_is_used_and_decodes(level: int) -> None:
    """Small updates code as ulp distances, a flipped lowest bit as XOR (no sign to code),
    unrelated values alone."""
    new, base = _checkpoints(np.dtype(np.float32))
    flipped = (base.view(np.uint32) ^ np.uint32(1)).view(np.float32)
    unrelated = np.load(GRADS).astype(np.float32)[::-1].copy()
    for data, kind in ((new, delta.ULP), (flipped, delta.XOR), (unrelated, delta.ALONE)):
        blocks = _round_trip(data, base, (64, 128), level)
        assert [b[0] for b in blocks] == [kind]
    ints = np.arange(8192, dtype=np.int32) * 2 + 1  # odd: x + 1 carries, x ^ 1 does not
    for data, kind in ((ints + 1, delta.ULP), (ints ^ 1, delta.XOR)):
        blocks = _round_trip(data, ints, (64, 128), level)
        assert [b[0] for b in blocks] == [kind]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(LEVELS), st.sampled_from([0, 1, 2]))
def test_garbage_blocks_raise_lmgc_errors(body: bytes, level: int, kind: int) -> None:
    """Random bytes after a valid kind byte: an lmgc error (or, by chance, exact values)."""
    base = np.linspace(-1, 1, 120, dtype=np.float32)
    meta, _ = delta.encode(base, base, (6, 20), level)
    with contextlib.suppress(LMGCError):
        delta.decode(meta, [bytes([kind]) + body], base, base.dtype, (6, 20))


def test_empty_and_scalar() -> None:
    for level in LEVELS:
        e = np.zeros(0, np.float32)
        assert _round_trip(e, e, (0,), level) == []
        s = np.array(np.float32(-0.0)).reshape(())
        _round_trip(s, np.array(np.float32(0.0)), (), level)
        assert math.prod(()) == 1


PATHS = [(True, True), (True, False), (False, False)]
"""(simd, zen) of the delta kernel's decoding paths: AVX2 by loads (AMD's), AVX2 by gathers,
scalar."""


def _path(k: object, simd: bool, zen: bool) -> None:
    k.simd(simd), k.zen(zen)  # type: ignore[attr-defined]


def test_vector_and_scalar_decoding_agree() -> None:
    """Level 1 decodes with AVX2 where the CPU has it: every path gives the same values, and the
    same refusal on damaged blocks."""
    k = delta.kernel()
    if not k.simd():
        pytest.skip("no AVX2 on this CPU")
    new, base = _checkpoints(np.dtype(np.float32))
    new, base = np.tile(new, 8), np.tile(base, 8)
    meta, blocks = delta.encode(new, base, (512, 128), 1)
    bad = bytearray(blocks[0])
    bad[len(bad) // 3] ^= 0x10
    outcomes = []
    was = k.zen()
    try:
        for simd, zen in PATHS:
            _path(k, simd, zen)
            got = delta.decode(meta, blocks, base, new.dtype, (512, 128))
            assert got.tobytes() == new.tobytes()
            try:
                delta.decode(meta, [bytes(bad)], base, new.dtype, (512, 128))
                outcomes.append("decoded")
            except LMGCError as err:
                outcomes.append(type(err).__name__)
    finally:
        _path(k, True, was)
    assert outcomes[0] == outcomes[1] == outcomes[2] != "decoded"


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype(np.float32),
        np.dtype(ml_dtypes.bfloat16),
        np.dtype(np.float16),
        np.dtype(np.int32),
        np.dtype(np.uint16),
        np.dtype(np.float64),
    ],
)
@pytest.mark.parametrize("transform", [delta.ULP, delta.XOR])
def test_vector_and_scalar_values_agree(dtype: np.dtype, transform: int) -> None:
    """The AVX2 value pass (16- and 32-bit values, both transforms, floats and integers; by
    loads and by gathers) gives the scalar pass's values on deltas of every length, sign changes
    and special values."""
    k = delta.kernel()
    if not k.simd():
        pytest.skip("no AVX2 on this CPU")
    w = 8 * dtype.itemsize
    u = np.dtype(f"u{dtype.itemsize}")
    rng = np.random.default_rng(7)
    n = 3 * 4096 + 13
    base = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).view(u).copy()
    base[: len(_specials(dtype))] = _specials(dtype)
    shift = rng.integers(0, w, n).astype(np.uint64)
    step = (rng.integers(0, 1 << 62, n, dtype=np.uint64) >> (np.uint64(62) - shift)).astype(u)
    new = np.where(rng.random(n) < 0.5, base + step, base - step).astype(u)
    new[::17] = base[::17]
    new[5::97] = rng.integers(0, 256, len(new[5::97]) * dtype.itemsize, np.uint8).view(u)
    segs = np.array([[0, 90, 128], [90 * 128, 1, n - 90 * 128]], dtype=np.int64)
    layout = (
        (w, 0, 0)
        if dtype.kind in "iub"
        else (w, {16: 8 if dtype == ml_dtypes.bfloat16 else 5, 32: 8, 64: 11}[w], 0)
    )
    layout = (w, layout[1], w - 1 - layout[1]) if layout[1] else layout
    block = k.encode(new, base, segs, *layout, 1, transform)
    damaged = []
    for _ in range(40):  # a bit or two flipped: both passes give the same values or error
        bad = bytearray(block)
        for at in rng.integers(0, len(bad), 2):
            bad[at] ^= 1 << int(rng.integers(0, 8))
        damaged.append(bytes(bad))
    outs: list[list[object]] = []
    was = k.zen()
    try:
        for simd, zen in PATHS:
            _path(k, simd, zen)
            got: list[object] = []
            for blk in [block, *damaged]:
                out = np.zeros_like(base)
                try:
                    k.decode(blk, out, base, segs, *layout, 1, transform)
                    got.append(out.tobytes())
                except ValueError as err:
                    got.append(str(err))
            outs.append(got)
    finally:
        _path(k, True, was)
    assert outs[0] == outs[1] == outs[2]
    assert outs[0][0] == new.tobytes()


DIGESTS = {  # SHA-256 (first 16 hex digits) of the blocks of fixed inputs: the bytes are the format
    ("float32", 1): "20671b5e077d076d",
    ("float32", 2): "cf3b6e36badac199",
    ("bfloat16", 1): "d867735bdf047c08",
    ("bfloat16", 2): "1000c32c58ed5b3c",
    ("float16", 1): "228c2d74fc5d7df0",
    ("float16", 2): "72783d599fca0108",
    ("float64", 1): "24de5793e25998e1",
    ("float64", 2): "c611a50641bbb933",
    ("int32", 1): "ad4bf4ad9c30599b",
    ("int32", 2): "94a154fed3cd2b51",
}


def _fixed_pairs():
    g = np.load(GRADS).astype(np.float32)
    w = g * np.float32(100)
    step = np.sign(np.roll(g, 1)) * np.float32(1e-3) * np.abs(w)
    for dt in (np.float32, ml_dtypes.bfloat16, np.float16, np.float64):
        yield np.dtype(dt).name, (w - step).astype(dt), w.astype(dt)
    i = (g * 1e4).astype(np.int32)
    yield "int32", i + (np.roll(i, 5) % 7), i


@pytest.mark.parametrize("level", LEVELS)
def test_blocks_of_fixed_inputs_keep_their_bytes(level: int) -> None:
    """A kernel change that changes the bytes must bump DELTA_VERSION and these digests: streams
    already written decode only with the kernel that wrote them."""
    import hashlib

    for name, new, base in _fixed_pairs():
        blocks = _round_trip(new, base, (64, 128), level)
        digest = hashlib.sha256(b"".join(blocks)).hexdigest()[:16]
        assert digest == DIGESTS[name, level], (name, level)


@pytest.mark.parametrize("shape", [(81920,), (2, 40960), (640, 128)])
def test_long_and_short_rows_decode_in_chunks(shape: tuple[int, ...]) -> None:
    """Level 1 decodes ~8192 values at a time (whole rows, or pieces of a longer row) with
    its rANS states running on across chunks: every cut gives back the values."""
    new, base = _checkpoints(np.dtype(np.float32))
    new, base = np.tile(new, 10), np.tile(base, 10)
    blocks = _round_trip(new, base, shape, 1)
    assert [b[0] for b in blocks] == [delta.ULP]


def test_kernel_crc32_is_zlibs() -> None:
    """The kernel's CRC-32 (VPCLMULQDQ or PCLMULQDQ folding where the CPU has it, bytes at the
    tail; the wide loop from 512 bytes, 256 at a time) gives
    zlib.crc32's value for every length, alignment and starting value: the container checks
    stream blocks with it against CRCs zlib wrote."""
    import zlib

    crc32 = delta.kernel().crc32
    data = np.random.default_rng(5).integers(0, 256, 1 << 17, dtype=np.uint8).tobytes()
    lengths = [*range(0, 300), *range(500, 800), 1023, 1024, 4096 + 15, 65536, (1 << 17) - 9]
    for n in lengths:
        for offset in (0, 1, 9):
            view = memoryview(data)[offset : offset + n]
            for start in (0, 0xDEADBEEF):
                assert crc32(view, start) == zlib.crc32(view, start), (n, offset, start)
    flipped = bytearray(data[:4096])
    flipped[1000] ^= 4
    assert crc32(bytes(flipped)) == zlib.crc32(bytes(flipped)) != zlib.crc32(data[:4096])
