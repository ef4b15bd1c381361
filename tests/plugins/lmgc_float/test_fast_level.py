"""The float prior's fast level (``level: 1``): bit-exact round trips over dtypes, shapes and
IEEE specials, fixed bytes (a kernel change that changes the stream must bump its version),
memory-safe errors on damaged or truncated blocks, and the level recorded in the header."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib

import ml_dtypes
import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from lmgc_float import fast
from lmgc_float.formats import as_uint, float_format, segments

from lmgc_core import LMGCError, Pipeline, decompress, read_header
from lmgc_core.stream import container
from lmgc_core.util.errors import ChecksumError, ConfigError, MismatchError, StreamError
from tests.conftest import same_bits
from tests.paths import TESTS_DIR

DATA = TESTS_DIR / "data"
FIXTURES = TESTS_DIR / "fixtures"
MLP_LAYOUT = [[256, 64], [256], [256, 256], [256], [10, 256], [10]]
FLOATS = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
FP8 = [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]
INTS = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint64, np.bool_]
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-40, 3.4e38, 1.0]


def _fast(**options) -> Pipeline:
    """Level 1 coding every part at level 1, however small (these tests are about its blocks;
    tests/plugins/lmgc_float/test_small_parts.py covers the choice of the smaller level)."""
    options = {"small_parts": "level", **options}
    return Pipeline.from_config({"prior": {"name": "float", "level": 1, **options}})


def _bit_patterns(dtype, shape):
    """Raw bit patterns (NaN payloads, -0.0, infinities, subnormals) mixed with runs of zeros."""
    dtype = np.dtype(dtype)
    uint = np.dtype(f"u{dtype.itemsize}")
    top = np.iinfo(uint).max
    elements = st.one_of(
        st.integers(0, top), st.just(0), st.sampled_from([1, top, 1 << (8 * dtype.itemsize - 1)])
    )
    return hnp.arrays(uint, shape, elements=elements).map(lambda a: a.view(dtype))


def _blocks(arr: np.ndarray, layout=None, block_values: int = 1 << 20) -> tuple:
    """The fast kernel's blocks of ``arr`` (what the prior hands it), and their cuts."""
    cuts, _ = segments(arr.shape, layout, block_values)
    bits = as_uint(arr.reshape(-1))
    return fast.encode_blocks(bits, cuts, float_format(arr.dtype), 1), cuts, bits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dtype=st.sampled_from(FLOATS + FP8 + INTS),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40),
    block_values=st.sampled_from([7, 64, 1 << 20]),
)
def test_round_trip_bit_patterns(data, dtype, shape, block_values):
    arr = data.draw(_bit_patterns(dtype, shape))
    blob = _fast(block_values=block_values).compress(arr)
    assert same_bits(decompress(blob), arr)


@pytest.mark.parametrize("dtype", FLOATS + FP8)
def test_real_gradients_and_specials(dtype):
    grads = np.load(DATA / "mlp_grads_8k.npy").reshape(64, 128)
    grads[3, :] = 0.0  # a dead unit: an all-zero row
    grads[:, 5] = 0.0  # an always-zero input: an all-zero column
    grads[7, :11] = SPECIALS
    with np.errstate(over="ignore"):
        arr = grads.astype(dtype)
    for pipe in (_fast(), _fast(block_values=1000)):
        assert same_bits(decompress(pipe.compress(arr)), arr)


def test_layout_and_size_on_real_gradients():
    """Real MLP gradients (7 snapshots of 4,096): within 5 % of the adaptive level's stream
    (tables are a larger share of so small an input) and well below the raw size."""
    grads = np.load(DATA / "mlp_digits_grads_slice.npy")
    layout = MLP_LAYOUT if grads.shape[-1] == 85002 else None
    blob = _fast(layout=layout).compress(grads)
    assert same_bits(decompress(blob), grads)
    adaptive = Pipeline.from_config({"prior": {"name": "float", "layout": layout}})
    assert len(blob) <= 1.05 * len(adaptive.compress(grads))
    assert len(blob) < 0.75 * grads.nbytes


def test_threads_give_the_same_bytes():
    grads = np.load(DATA / "mlp_grads_8k.npy").reshape(-1, 64)
    pipe = _fast(block_values=512)
    one, two = pipe.compress(grads, jobs=1), pipe.compress(grads, jobs=2)
    assert one == two
    assert same_bits(pipe.decompress(one, jobs=2), grads)


EXPECTED_SHA256 = {
    "float32": "2922c7289fdd453212c6705e85e8aac9b4134043c40cc05ae084edf3560ab8ba",
    "bfloat16": "516219bfab4aa1f60ec79c309f1966b7d0b7efedc36dc4724e57e1ddef4cc1ca",
    "float16": "b3f29d4ee667327b58b064b5a8751fdc5af5a4ad0a47bdf88997e5df904ba735",
    "float64": "c4f8076a37ee6b0bda6612de1e8b0e2a4fea0fd32dc8f78d90f1b733e8df27b7",
    "float8_e4m3fn": "8cbaada2243500e8ad98b923d0bf1a6561e77416cb91917dd4546d386e883786",
    "int16": "0a42b6b4a1370ca12d4e4fe299fe89ca4512d47f49ef496167ac084c948a5168",
    "float32-states64": "5722e3e3edf631246ac24681749b0a3a741e4497ca8d0f0a5f13db7d9178ccdc",
    "bfloat16-states128": "46746dc6fd341ecf111ef371ab235fc898cdc36dd91c7d2bedbec9345388da36",
}
WIDE_BLOCKS = {"float32-states64": (1 << 15, 1), "bfloat16-states128": (1 << 18, 2)}
"""Inputs coded as one block with more rANS states (version 6: 64 from ~64 KB, 128 from ~192 KB):
(block_values, states code)"""


def _fixed_input(name: str) -> np.ndarray:
    if name in WIDE_BLOCKS:  # copies scaled by powers of two: 4 x 2^13 values, 31 x 2^13
        base = _fixed_input(name.split("-")[0])
        powers = range(4) if name == "float32-states64" else range(-15, 16)
        with np.errstate(over="ignore"):  # 3.4e38 doubled: inf, exactly as on every CPU
            return np.concatenate([base * base.dtype.type(2.0**k) for k in powers])
    grads = np.load(DATA / "mlp_grads_8k.npy").reshape(64, 128)
    grads[3, :] = 0.0
    grads[:, 5] = 0.0
    if name == "int16":  # integer rounding of finite values only: the same on every CPU
        return np.clip(np.rint(grads * 2**16), -(2**15), 2**15 - 1).astype(np.int16)
    grads[7, :11] = SPECIALS
    with np.errstate(over="ignore"):
        return grads.astype(ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name))


@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
def test_fixed_bytes(name):
    """The same input gives the same bytes on every CPU and in every version of the kernel
    that keeps FAST_VERSION: a change to the stream must bump it (and these hashes)."""
    arr = _fixed_input(name)
    coded, _, _ = _blocks(arr, block_values=WIDE_BLOCKS.get(name, (4096, 0))[0])
    digest = hashlib.sha256(b"".join(coded)).hexdigest()
    assert fast.FAST_VERSION == 9  # 9: version 8's blocks, side values packed where shorter
    assert digest == EXPECTED_SHA256[name]
    if name in WIDE_BLOCKS:  # the kind byte's bits 2-3: log2(states / 32)
        assert [block[0] >> 2 & 3 for block in coded] == [WIDE_BLOCKS[name][1]]


def test_level_recorded_and_decoded_without_being_told():
    grads = np.load(DATA / "mlp_grads_8k.npy")
    blob = _fast().compress(grads)
    header = read_header(blob)
    assert header["pipeline"]["prior"]["level"] == 1
    assert header["prior"]["level"] == 1 and header["prior"]["fast_version"] == 9
    assert same_bits(decompress(blob), grads)
    # a pipeline set to the other level still decodes it: the stream says which
    adaptive = Pipeline.from_config({"prior": {"name": "float", "level": 2}})
    assert same_bits(adaptive.decompress(blob), grads)
    # the highest level keeps its old header (no level in the prior's fingerprint), and the
    # fast pipeline decodes it
    old = adaptive.compress(grads)
    assert "level" not in read_header(old)["prior"]
    assert same_bits(_fast().decompress(old), grads)
    assert len(blob) != len(old)


@pytest.mark.parametrize("name", ["float-level1.lmgc", "float-level1-bf16.lmgc"])
def test_version_2_streams_decode_on_both_paths(name):
    """Streams of fast_version 2 (exponent and sign / mantissa as two symbols) keep decoding,
    on the AVX2 and the scalar path, to the values their fixture index records."""
    blob = (FIXTURES / "stream-v2-b" / name).read_bytes()
    assert read_header(blob)["prior"]["fast_version"] == 2
    want = json.loads((FIXTURES / "stream-v2-b" / "index.json").read_text())["files"][name]
    k = fast.kernel()
    paths = [True, False] if k.simd() else [False]
    try:
        for simd in paths:
            k.simd(simd)
            out = decompress(blob)
            assert (
                hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()
                == (want["expected"]["sha256"])
            )
    finally:
        k.simd(True)


@pytest.mark.parametrize("version", [1, 10, True])
def test_unknown_fast_version_is_refused(version):
    grads = np.load(DATA / "mlp_grads_8k.npy")
    blob = _fast().compress(grads)
    header, offset = container.read_header(blob)
    header["prior"] = {**header["prior"], "fast_version": version}
    forged = container.pack(header, [blob[offset:]])
    with pytest.raises(MismatchError, match="fast_version"):
        decompress(forged)


@pytest.mark.parametrize("level", [0, 3, True, "1", 1.0])
def test_bad_level_is_refused(level):
    with pytest.raises(ConfigError, match="level"):
        _fast(level=level)


def _decode(block: bytes, cuts, bits: np.ndarray, fmt) -> np.ndarray:
    out = np.zeros_like(bits)
    fast.decode_blocks([block], out, cuts[:1], fmt, 1)
    return out


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float64, np.int32])
def test_truncated_blocks_raise(dtype):
    arr = _fixed_input("float32").astype(dtype)
    coded, cuts, bits = _blocks(arr)
    fmt = float_format(arr.dtype)
    assert same_bits(_decode(coded[0], cuts, bits, fmt), bits)
    block = coded[0]
    for cut in sorted({0, 1, 2, 5, 17, len(block) // 3, len(block) // 2, len(block) - 1}):
        with pytest.raises(StreamError, match="fast level"):
            _decode(block[:cut], cuts, bits, fmt)
    with pytest.raises(StreamError, match="fast level"):
        _decode(block + b"\0", cuts, bits, fmt)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16, np.uint8])
def test_garbage_and_bit_flips_never_crash(dtype):
    """Random bytes are refused; flipped bits either raise StreamError or decode to some
    values (the stream's checksum catches those): never a read or write out of bounds."""
    arr = _fixed_input("float32").astype(dtype)
    coded, cuts, bits = _blocks(arr)
    fmt = float_format(arr.dtype)
    rng = np.random.default_rng(5)
    for trial in range(300):
        size = int(rng.integers(1, 3 * len(coded[0])))
        garbage = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        garbage = bytes([trial % 3]) + garbage[1:]  # every block kind
        with pytest.raises(StreamError):
            _decode(garbage, cuts, bits, fmt)
    block = bytearray(coded[0])
    for _ in range(300):
        flipped = bytearray(block)
        pos = int(rng.integers(0, len(block)))
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        with contextlib.suppress(StreamError):
            _decode(bytes(flipped), cuts, bits, fmt)


def test_damaged_stream_gives_a_clear_error():
    grads = np.load(DATA / "mlp_grads_8k.npy")
    blob = bytearray(_fast().compress(grads))
    blob[-40] ^= 0x10
    with pytest.raises(LMGCError):
        decompress(bytes(blob))


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float64, np.int16])
def test_simd_and_scalar_decoders_agree(dtype):
    """The AVX2 decoder (where the CPU has it) and the scalar one decode every block to the
    same values, including damaged ones (same error or same garbage)."""
    k = fast.kernel()
    if not k.simd():
        pytest.skip("this CPU (or build) has no AVX2 path")
    arr = _fixed_input("float32").astype(dtype) if dtype != np.int16 else _fixed_input("int16")
    big = np.tile(arr, (40, 1))  # groups of 32 symbols with words to spare: the SIMD loop runs
    coded, cuts, bits = _blocks(big)
    fmt = float_format(big.dtype)
    rng = np.random.default_rng(7)
    blocks = [coded[0]]
    for _ in range(20):
        damaged = bytearray(coded[0])
        damaged[int(rng.integers(0, len(damaged)))] ^= 1 << int(rng.integers(0, 8))
        blocks.append(bytes(damaged))
    try:
        for block in blocks:
            results = []
            for simd in (True, False):
                k.simd(simd)
                try:
                    results.append(_decode(block, cuts, bits, fmt).tobytes())
                except StreamError as err:
                    results.append(str(err))
            assert results[0] == results[1]
        assert results  # the undamaged block decoded on both paths
    finally:
        k.simd(True)
    k.simd(True)
    assert same_bits(_decode(coded[0], cuts, bits, fmt), bits)


MURMUR3_FOX = "6c1b07bc7bbc4be347939ac4a93c437a"
"""MurmurHash3_x64_128 (seed 0) of b"The quick brown fox jumps over the lazy dog": h1 then h2,
little-endian, as published with the algorithm (and as ``mmh3.hash_bytes`` gives)."""
FOX = b"The quick brown fox jumps over the lazy dog"


def test_block_checksum_is_xxh3_of_the_values():
    """Every block ends with XXH3-128 of its values' little-endian bytes in segment order, the
    same on every CPU: what the ``xxhash`` package gives, split across segments at odd places
    (tests/plugins/lmgc_float/test_xxh3.py checks every length and split)."""
    k = fast.kernel()
    text = np.frombuffer(FOX, dtype=np.uint8)
    for segs in ([(0, 1, text.size)], [(0, 1, 5), (5, 3, 3), (14, 1, 29)]):
        block = k.encode(text, np.array(segs, dtype=np.int64), 8, 0, 0)
        assert block[-k.DIGEST :] == xxhash.xxh3_128_digest(FOX)
    words = np.frombuffer(FOX + b".", dtype="<u2")
    block = k.encode(words.astype(np.uint16), np.array([(0, 2, 11)], dtype=np.int64), 16, 0, 0)
    assert block[-16:] == xxhash.xxh3_128_digest(FOX + b".")


def test_murmur3_checksum_of_delta_and_small_part_blocks():
    """Delta blocks and a level-1 stream's level-2 small parts keep MurmurHash3_x64_128 (as do
    fast blocks before version 4): the published digest, split across segments."""
    from lmgc_float import delta

    k = delta.kernel()
    text = np.frombuffer(FOX, dtype=np.uint8)
    for segs in ([(0, 1, text.size)], [(0, 1, 5), (5, 3, 3), (14, 1, 29)]):
        assert k.checksum(text, np.array(segs, dtype=np.int64), 8).hex() == MURMUR3_FOX
    words = np.frombuffer(FOX + b".", dtype="<u2").astype(np.uint16)
    digest = k.checksum(words, np.array([(0, 2, 11)], dtype=np.int64), 16)
    assert digest.hex() == "c902e99e1f4899cde7b68789a3a15d69"


def _altered_but_decodable(block: bytes, cuts, bits, fmt) -> bytes:
    """``block`` with one payload bit flipped such that the kernel still decodes it (to other
    values): only the checksum can tell."""
    k = fast.kernel()
    body = len(block) - k.DIGEST
    for pos in range(body - 1, 0, -1):  # the raw mantissa bytes sit at the end of the body
        for bit in range(8):
            altered = bytearray(block)
            altered[pos] ^= 1 << bit
            out = np.empty_like(bits)
            try:
                k.decode(bytes(altered), out, fast.seg_array(cuts[0]), *fast._layout(bits, fmt))
            except ValueError as err:
                if str(err) == k.CHECKSUM_MISMATCH:
                    return bytes(altered)
    raise AssertionError("no decodable alteration found")


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.int16])
def test_checksum_catches_altered_values(dtype):
    """A block whose payload is altered, its CRC repaired, decodes to other values: the stream
    must refuse it (ChecksumError), never return them."""
    arr = _fixed_input("int16") if dtype == np.int16 else _fixed_input("float32").astype(dtype)
    blob = _fast().compress(arr)
    header, offset = container.read_header(blob)
    assert header["checksum"] == fast.BLOCK_CHECKSUM and "sha256" not in header
    ((size, _),) = header["parts"][0]["blocks"]
    block = bytes(blob[offset : offset + size])
    cuts, _ = segments(arr.shape, None, 1 << 18)
    altered = _altered_but_decodable(block, cuts, as_uint(arr.reshape(-1)), float_format(arr.dtype))
    header["parts"][0]["blocks"] = [[size, zlib.crc32(altered)]]
    forged = container.pack(header, [altered])
    with pytest.raises(ChecksumError, match="checksum"):
        decompress(forged)
    assert same_bits(decompress(container.pack(header | {"parts": read_header(blob)["parts"]},
                                               [block])), arr)  # fmt: skip


def test_checksum_key_only_where_the_prior_verifies_it():
    """A level-2 (adaptive) stream keeps its SHA-256; a header that names the block checksum
    for a prior that does not verify one is refused, not decoded unchecked."""
    grads = np.load(DATA / "mlp_grads_8k.npy")
    staged = Pipeline.from_config(
        {"prior": {"name": "float", "level": 1}, "stages": [{"name": "quantize", "bits": 8}]}
    )
    assert "sha256" in read_header(staged.compress(grads))
    old = Pipeline.from_config({"prior": {"name": "float", "level": 2}}).compress(grads)
    header, offset = container.read_header(old)
    assert "sha256" in header and "checksum" not in header
    del header["sha256"]
    forged = container.pack({**header, "checksum": fast.BLOCK_CHECKSUM}, [old[offset:]])
    with pytest.raises(StreamError, match="checksum"):
        decompress(forged)
