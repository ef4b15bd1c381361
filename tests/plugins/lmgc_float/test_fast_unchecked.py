"""The fast kernel without its canonical checks (``decode(..., canonical=False)``), as the float
prior decodes blocks whose CRC32 the container verified: every block still decodes bit for bit,
damaged input still raises ValueError and never reads or writes out of bounds, and a changed
block decodes, if at all, only to the very values coded (its checksum). The pipeline runs the
checks exactly where it leaves a block's CRC32 unchecked (docs/format.md, What checks what)."""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float import prior as float_prior
from lmgc_float.formats import float_format

from lmgc_core import LMGCError, Pipeline, decompress
from lmgc_core.stream import container
from tests.conftest import same_bits
from tests.paths import TESTS_DIR
from tests.plugins.lmgc_float.test_fast_canonical import DTYPES, _arrays, _varint

DATA = TESTS_DIR / "data"
GUARD = 64
"""Values of canary on each side of the decoder's output: a write out of bounds changes them."""
CANARY = 0xA5


def _case(arr: np.ndarray):
    """(values as unsigned ints, segments, layout, block) of a one-segment block of ``arr``."""
    rows, cols = (1, arr.size) if arr.ndim == 1 else arr.shape
    segs = np.array([0, rows, cols], dtype=np.int64)
    bits = np.ascontiguousarray(arr).reshape(-1).view(f"u{arr.itemsize}")
    layout = fast._layout(bits, float_format(arr.dtype))
    return bits, segs, layout, fast.kernel().encode(bits, segs, *layout)


def _decode(block: bytes, bits: np.ndarray, segs, layout, canonical: bool = False):
    """The values ``block`` decodes to, or the ValueError's text; asserts that nothing outside
    the output was written."""
    padded = np.full(bits.size + 2 * GUARD, CANARY, dtype=bits.dtype)
    out = padded[GUARD:-GUARD]
    try:
        fast.kernel().decode(block, out, segs, *layout, canonical=canonical)
        result: bytes | str = out.tobytes()
    except ValueError as err:
        result = str(err)
    assert (padded[:GUARD] == CANARY).all() and (padded[-GUARD:] == CANARY).all()
    return result


@pytest.fixture(params=sorted(fast.DECODING_PATHS))
def simd(request):
    """Each decoding path (fast.DECODING_PATHS), skipped where the CPU lacks it."""
    with fast.decoding_path(request.param) as available:
        if not available:
            pytest.skip(f"no {request.param} path on this CPU")
        yield request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_without_the_checks(dtype, simd):
    """1-D and 2-D blocks (every side-information flag), and a block of two segments."""
    arrays = _arrays(dtype)
    two = np.concatenate([arrays[1].reshape(-1), arrays[0]])
    for arr in arrays:
        bits, segs, layout, block = _case(arr)
        assert block[0] != 0, "a stored block: the test would not reach the coder"
        assert _decode(block, bits, segs, layout) == bits.tobytes()
    segs = np.array([0, *arrays[1].shape, arrays[1].size, 1, arrays[0].size], dtype=np.int64)
    bits = two.view(f"u{two.itemsize}")
    layout = fast._layout(bits, float_format(two.dtype))
    block = fast.kernel().encode(bits, segs, *layout)
    assert _decode(block, bits, segs, layout) == bits.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_bit_flip_is_refused_or_decodes_the_same_values(dtype, simd):
    """Without the canonical checks a flip of a bit that never reaches the values (a mean's
    fraction bits, a flag's unused bits) may decode; it must then give the exact values coded,
    never other values without an error. Counted: the flips only the canonical checks catch."""
    silent = 0
    for arr in _arrays(dtype):
        bits, segs, layout, block = _case(arr)
        for i in range(len(block)):
            for bit in range(8):
                changed = bytearray(block)
                changed[i] ^= 1 << bit
                got = _decode(bytes(changed), bits, segs, layout)
                if isinstance(got, bytes):
                    assert got == bits.tobytes(), f"byte {i} bit {bit}: other values, no error"
                    silent += 1
                    assert isinstance(_decode(bytes(changed), bits, segs, layout, True), str)
    if float_format(np.dtype(dtype)) is not None:
        assert silent > 0, "no flip needed the canonical checks: this test checks nothing new"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_truncated_extended_and_random_blocks_are_refused(dtype, simd):
    rng = np.random.default_rng(11)
    for arr in _arrays(dtype):
        bits, segs, layout, block = _case(arr)
        for cut in range(len(block)):
            assert isinstance(_decode(block[:cut], bits, segs, layout), str)
        for extra in (b"\0", b"\1", bytes(17)):
            assert isinstance(_decode(block + extra, bits, segs, layout), str)
        for trial in range(200):  # every kind byte, random lengths and bodies
            size = int(rng.integers(1, 2 * len(block)))
            garbage = bytes([trial % 4]) + rng.integers(0, 256, size, np.uint8).tobytes()
            assert isinstance(_decode(garbage, bits, segs, layout), str)
        for _ in range(200):  # the real block with a few random bytes changed
            changed = bytearray(block)
            for at in rng.integers(0, len(block), int(rng.integers(1, 5))):
                changed[at] = int(rng.integers(0, 256))
            got = _decode(bytes(changed), bits, segs, layout)
            assert isinstance(got, str) or got == bits.tobytes()


# -- the pipeline: checks off where the container verified the CRC32s, on where it did not ------
def _resealed_level1_stream() -> tuple[bytes, np.ndarray]:
    """A level-1 stream of 2-D bfloat16 whose block has one bit changed that only the canonical
    checks catch (it decodes to the same values), with the CRC32 in the header recomputed to
    match: a block the container's CRC32 passes and only the kernel's checks can refuse."""
    arr = _arrays(ml_dtypes.bfloat16)[1]
    config = {"prior": {"name": "float", "level": 1, "small_parts": "level"}}
    blob = Pipeline.from_config(config).compress(arr)
    header, offset = container.read_header(blob)
    (entry,) = header["parts"][0]["blocks"]
    block = blob[offset : offset + entry[0]]
    bits, segs, layout, _ = _case(arr)
    for i in range(len(block)):
        for bit in range(8):
            changed = bytearray(block)
            changed[i] ^= 1 << bit
            if _decode(bytes(changed), bits, segs, layout) == bits.tobytes():
                entry[1] = zlib.crc32(changed)
                return container.pack(header, [bytes(changed)]), arr
    raise AssertionError("no flip decodes without the canonical checks")


def test_pipeline_decodes_without_the_checks_where_the_crc_was_verified():
    """The switch is off: the container checks the CRC32 (the resealed one passes), so the
    kernel runs without its canonical checks and the block decodes to the values coded."""
    assert float_prior.SELF_CHECKED_BLOCKS is False
    blob, arr = _resealed_level1_stream()
    assert same_bits(decompress(blob), arr)


def test_pipeline_runs_the_checks_where_the_crc_is_skipped(monkeypatch):
    """With the switch on the container skips the level-1 blocks' CRC32s, so the kernel must run
    its canonical checks: the changed block is refused."""
    blob, _ = _resealed_level1_stream()
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", True)
    with pytest.raises(LMGCError, match="side information"):
        decompress(blob)


def test_direct_calls_check_by_default():
    """The kernel's and decode_blocks' default is the safe one: with the canonical checks."""
    arr = _arrays(ml_dtypes.bfloat16)[1]
    blob, _ = _resealed_level1_stream()
    block = blob[container.read_header(blob)[1] :]
    bits, segs, layout, _ = _case(arr)
    with pytest.raises(ValueError, match="side information"):
        fast.kernel().decode(block, np.empty_like(bits), segs, *layout)
    with pytest.raises(LMGCError, match="side information"):
        fast.decode_blocks(
            [block], np.empty_like(bits), [[(0, *arr.shape)]], float_format(arr.dtype), 1
        )


SHORT_DTYPES = [ml_dtypes.bfloat16, np.float16, ml_dtypes.float8_e4m3fn, np.float32]


@pytest.mark.parametrize("dtype", SHORT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_rows_shorter_than_a_vector(dtype, simd):
    """fused_row rebuilds a row of 16-bit values or narrower that is shorter than a vector
    (SPAN, 32) as a whole vector where its segment has the room, writing into the next rows'
    places before they are rebuilt: every row length around the vector's, segments that end
    with too little room, zero rows, segments out of order, and the block's last values next
    to the output's end (the guard's canary)."""
    g = np.load(DATA / "mlp_grads_8k.npy").astype(np.float64)
    g = (1 + np.abs(g[:4096]) / np.abs(g).max()) * np.sign(g[:4096])
    for cols in (1, 2, 3, 5, 9, 16, 25, 31, 32, 33):
        for rows in (1, 2, 3, 7, 40):
            arr = g[: rows * cols].reshape(rows, cols) * 2.0 ** (np.arange(rows) % 5 - 2)[:, None]
            if rows > 3:
                arr[rows // 2] = 0.0  # a zero row inside the segment
            bits, segs, layout, block = _case(arr.astype(dtype))
            assert _decode(block, bits, segs, layout) == bits.tobytes(), (rows, cols)
    # three segments: 7 x 25 at the end of the output, then 5 x 9 and 2 x 31 before it
    arr = g[: 175 + 45 + 62].astype(dtype)
    segs = np.array([107, 7, 25, 0, 5, 9, 45, 2, 31], dtype=np.int64)
    bits = arr.view(f"u{arr.itemsize}")
    layout = fast._layout(bits, float_format(arr.dtype))
    block = fast.kernel().encode(bits, segs, *layout)
    assert block[0] != 0, "a stored block: the test would not reach the coder"
    assert _decode(block, bits, segs, layout) == bits.tobytes()


@pytest.mark.parametrize(
    "dtype", [np.float32, ml_dtypes.bfloat16, np.int16], ids=lambda d: np.dtype(d).name
)
def test_every_decoding_path_agrees(dtype):
    """AMD Zen's paths (with AVX-512 and with AVX2 only), AVX-512VL renormalisation, plain AVX2
    and scalar decode every block, damaged ones too, to the same values or the same error (blocks
    big enough for the vector loops to run)."""
    with fast.decoding_path("zen-avx512") as available:
        if not available:
            pytest.skip("no x86-64-v4 (AVX-512) on this CPU")
    rng = np.random.default_rng(3)
    arr = (
        np.tile(_arrays(np.float32)[1], (40, 1)).astype(dtype)
        if dtype != np.int16
        else ((np.load(DATA / "mlp_grads_8k.npy") * 1e4).astype(np.int16).reshape(64, 128))
    )
    bits, segs, layout, block = _case(arr)
    blocks = [block]
    for _ in range(30):
        damaged = bytearray(block)
        damaged[int(rng.integers(0, len(damaged)))] ^= 1 << int(rng.integers(0, 8))
        blocks.append(bytes(damaged))
    for b in blocks:
        got = set()
        for name in fast.DECODING_PATHS:
            with fast.decoding_path(name):
                got.add(_decode(b, bits, segs, layout))
        assert len(got) == 1
    assert _decode(block, bits, segs, layout) == bits.tobytes()


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value >= 0x80 else 0))
        value >>= 7
        if not value:
            return bytes(out)


@pytest.mark.parametrize("zeros", [False, True], ids=["dense", "with-zeros"])
def test_a_wrong_count_of_coded_values_is_refused(zeros, simd):
    """The block header's count of coded (nonzero) values must be the count of its decoded
    symbols that are not zeros; a dense block's table lists no zero symbol, so the decoder knows
    that count without counting (every value), a block with zeros counts them: either way a
    count one off is refused, on every path and without the canonical checks."""
    arr = np.load(DATA / "mlp_grads_8k.npy")[:4096].astype(np.float32).reshape(64, 64)
    arr = arr + np.float32(1.0) if not zeros else np.where(np.abs(arr) < 1e-4, 0, arr)
    assert (np.count_nonzero(arr == 0) > 0) == zeros
    bits, segs, layout, block = _case(arr.astype(np.float32))
    na, at = _varint(block, 1)
    nb, end = _varint(block, at)
    assert (nb < na) == zeros and _decode(block, bits, segs, layout) == bits.tobytes()
    for wrong in (nb - 1, nb + 1):
        if len(_put_varint(wrong)) != end - at:
            continue
        changed = block[:at] + _put_varint(wrong) + block[end:]
        got = _decode(changed, bits, segs, layout)
        assert isinstance(got, str) and got, f"a count of {wrong} for {nb} decoded"
