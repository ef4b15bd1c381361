"""The fast level's block checksum since FAST_VERSION 4: XXH3-128, checked against the
independent implementation (the ``xxhash`` package), fed whole and in pieces as the decoder
feeds it row by row, on the AVX-512, AVX2 and scalar loops; and every kind of block carries it."""

from __future__ import annotations

import os
import random

import ml_dtypes
import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from lmgc_float import fast
from lmgc_float.codec import seg_array
from lmgc_float.formats import as_uint, float_format, segments

from tests.paths import TESTS_DIR

K = fast.kernel()


@pytest.fixture(params=["zen-avx512", "avx2", "scalar"])
def simd(request):
    """Each checksum loop: AVX-512 (the Zen 4 path's), AVX2, scalar, where the CPU has it."""
    with fast.decoding_path(request.param) as available:
        if not available:
            pytest.skip(f"no {request.param} path on this CPU")
        yield request.param


def test_every_length_whole_and_in_pieces(simd):
    """Every length to 2,100 bytes (the short paths end at 240, a 1,024-byte block of stripes
    is scrambled, the last stripe overlaps), each whole and split at random places."""
    rng = random.Random(7)
    for n in [*range(2100), 4095, 4096, 4097, 65_537]:
        data = os.urandom(n)
        want = xxhash.xxh3_128_digest(data)
        assert K.xxh3_128(data) == want, n
        cuts = sorted(rng.sample(range(n + 1), min(n + 1, rng.randint(1, 12))))
        assert K.xxh3_128(data, cuts) == want, (n, cuts)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), pieces=st.lists(st.integers(0, 3000), max_size=30))
def test_any_split_gives_the_same_digest(data, pieces):
    cuts = sorted(min(p, len(data)) for p in pieces)
    assert K.xxh3_128(data, cuts) == xxhash.xxh3_128_digest(data)


def test_byte_at_a_time_across_stripes():
    """Pieces of one byte: every stripe is completed from the bytes waiting in the tail."""
    data = os.urandom(1500)
    assert K.xxh3_128(data, range(1500)) == xxhash.xxh3_128_digest(data)


def _values_bytes(bits: np.ndarray, cuts: list) -> bytes:
    """The little-endian bytes of the values a block's segments name, in segment order."""
    out = []
    for offset, rows, cols in cuts:
        out.append(bits[offset : offset + rows * cols].astype(bits.dtype.newbyteorder("<")))
    return b"".join(a.tobytes() for a in out)


@pytest.mark.parametrize(
    "dtype, kind",
    [
        (np.float32, 0x13),
        (ml_dtypes.bfloat16, 0x13),
        (np.float64, 0x13),
        (np.int32, 0x12),
        (np.float32, 0x10),  # random bits: stored
    ],
)
def test_every_kind_of_block_ends_with_xxh3_of_its_values(dtype, kind):
    grads = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy").reshape(64, 128)
    if kind == 0x10:
        arr = np.random.default_rng(1).integers(0, 2**32, (64, 128), dtype=np.uint32)
        arr = arr.view(np.float32)
    elif np.dtype(dtype).kind == "i":
        arr = np.rint(grads * 2**20).astype(dtype)
    else:
        arr = grads.astype(dtype)
    cuts, _ = segments(arr.shape, None, 2048)
    bits = as_uint(arr.reshape(-1))
    blocks = fast.encode_blocks(bits, cuts, float_format(arr.dtype), 1)
    assert len(blocks) == len(cuts) > 1
    for block, block_cuts in zip(blocks, cuts, strict=True):
        assert block[0] & 0x1F == kind  # bits 5-7: the table's scale (version 5)
        assert block[-16:] == xxhash.xxh3_128_digest(_values_bytes(bits, block_cuts))


def test_a_block_read_with_the_other_checksum_is_refused():
    """The kind byte names the checksum: a block whose flag is cleared is checked against
    MurmurHash3 and refused, so no stream decodes under the wrong checksum. A stored block
    (no table, so no scale bits: test_table_scale covers those) shows it, from random bits."""
    arr = np.random.default_rng(2).integers(0, 2**32, 4096, dtype=np.uint32).view(np.float32)
    cuts, _ = segments(arr.shape, None, 4096)
    bits = as_uint(arr)
    (block,) = fast.encode_blocks(bits, cuts, float_format(arr.dtype), 1)
    assert block[0] == 0x10
    out = np.empty_like(bits)
    K.decode(block, out, seg_array(cuts[0]), 32, 8, 23)
    assert out.tobytes() == bits.tobytes()
    murmur = bytes([block[0] & ~0x10]) + block[1:]
    with pytest.raises(ValueError, match="checksum"):
        K.decode(murmur, out, seg_array(cuts[0]), 32, 8, 23)
