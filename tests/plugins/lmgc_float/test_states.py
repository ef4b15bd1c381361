"""The fast level's interleaved rANS states since FAST_VERSION 6: a float block interleaves 32,
64 or 128, as many as it can afford (each extra state's 4 final bytes at most 1/512 of the
block's estimated bytes: 64 from 64 KB, 128 from 192 KB), named by bits 2-3 of its kind byte
(log2(states / 32)); blocks of earlier versions have them clear and decode with 32. More states
in flight decode faster (each state's chain from one group of symbols to the next is long); the
encoder picks the count from its integer estimate, so it is part of the bytes every machine
writes (test_fast_level.test_fixed_bytes)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float.codec import seg_array
from lmgc_float.formats import as_uint, float_format, segments

from tests.paths import TESTS_DIR

K = fast.kernel()
GRADS = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy").astype(np.float32)
SIZES = {
    "float32": {32: 8192, 64: 20000, 128: 70000},
    "bfloat16": {32: 30000, 64: 50000, 128: 150000},
}
"""dtype -> states -> values of a dense input (every value coded) whose block gets them"""


def _dense(n: int, dtype) -> np.ndarray:
    """n real gradients without zeros (every value is a symbol), scaled copies of the file's."""
    g = GRADS[GRADS != 0]
    copies = [g * np.float32(2.0**k) for k in range(-(n // (2 * len(g))) - 1, n // len(g) + 1)]
    return np.concatenate(copies)[:n].astype(dtype)


def _block(arr: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    fmt = float_format(arr.dtype)
    bits = as_uint(arr.reshape(-1))
    (cut,), _ = segments(bits.shape, None, 1 << 18)
    segs = seg_array(cut)
    block = K.encode(bits, segs, 8 * bits.itemsize, fmt.exponent_bits, fmt.mantissa_bits)
    return block, bits, segs


def _decode(block: bytes, bits: np.ndarray, segs: np.ndarray) -> np.ndarray:
    out = np.empty_like(bits)
    fmt = float_format(np.float32 if bits.itemsize == 4 else ml_dtypes.bfloat16)
    K.decode(block, out, segs, 8 * bits.itemsize, fmt.exponent_bits, fmt.mantissa_bits)
    return out


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
@pytest.mark.parametrize("states", [32, 64, 128])
@pytest.mark.parametrize("path", sorted(fast.DECODING_PATHS))
def test_each_count_is_named_and_decodes_on_every_decoding_path(states, dtype, path):
    block, bits, segs = _block(_dense(SIZES[np.dtype(dtype).name][states], dtype))
    assert block[0] & 0x13 == 0x13  # version 3's fields, XXH3-128
    assert 32 << (block[0] >> 2 & 3) == states
    assert 4 * (states - 32) <= len(block) / 500  # the extra states' share, as estimated
    with fast.decoding_path(path) as available:
        if not available:
            pytest.skip(f"this CPU (or build) has no {path} path")
        assert _decode(block, bits, segs).tobytes() == bits.tobytes()


@pytest.mark.parametrize("states", [32, 64, 128])
def test_another_count_is_refused(states):
    """Read with any other number of states, the stream does not end where it should, or its
    states do not end where the encoder started them: an edited kind byte never decodes; the
    code 3 (256 states) is no version's."""
    block, bits, segs = _block(_dense(SIZES["float32"][states], np.float32))
    code = block[0] >> 2 & 3
    for other in range(4):
        if other == code:
            continue
        edited = bytes([(block[0] & ~0x0C) | other << 2]) + block[1:]
        for path in fast.DECODING_PATHS:
            with fast.decoding_path(path) as available:
                if not available:
                    continue
                message = "unknown block kind" if other == 3 else "damaged symbol stream"
                with pytest.raises(ValueError, match=message):
                    _decode(edited, bits, segs)


def test_states_bits_only_in_a_block_of_version_3_fields_with_xxh3():
    """A MurmurHash3 block (versions 2 and 3), a version-2 float block, a stored or an
    integer block with bits 2-3 set is not one the encoder writes: refused by its kind."""
    block, bits, segs = _block(_dense(SIZES["float32"][64], np.float32))
    assert block[0] >> 2 & 3 == 1
    for kind in (0x03, 0x01, 0x11, 0x10, 0x12):
        with pytest.raises(ValueError, match=r"unknown block kind|not shorter"):
            _decode(bytes([kind | 1 << 2]) + block[1:], bits, segs)


def test_split_runs_get_their_own_states():
    """Each run a block is split into is an ordinary block, with the states its own symbol count
    gets: real gradients then their squares (test_block_splits.MIXED), 2^15 values each."""
    arr = np.concatenate([GRADS] * 4 + [GRADS * GRADS] * 4)
    bits = as_uint(arr)
    cuts, _ = segments(bits.shape, ((256, 128), (256, 128)), 1 << 18)
    blocks, splits = fast.encode_split_blocks(bits, cuts, float_format(arr.dtype), 1)
    assert splits == [1] and [b[0] >> 2 & 3 for b in blocks] == [1, 1]
    for path in fast.DECODING_PATHS:
        with fast.decoding_path(path) as available:
            if not available:
                continue
            out = np.empty_like(bits)
            fast.decode_blocks(blocks, out, fast.regroup(cuts, splits), float_format(arr.dtype), 1)
            assert out.tobytes() == bits.tobytes()


def test_a_block_of_predictable_symbols_keeps_32_states():
    """2^18 zeros code to a few bytes: 384 more for 128 states would more than triple them."""
    zeros = np.zeros(1 << 18, np.float32)
    block, bits, segs = _block(zeros)
    assert block[0] >> 2 & 3 == 0 and len(block) < 512
    assert _decode(block, bits, segs).tobytes() == bits.tobytes()
