"""The fast kernel refuses every non-canonical block: each bit of a level-1 block either reaches
the decoded values (the block's checksum catches it) or is checked to be what the encoder writes
(canonical varints, exact side information, zero padding, exact lengths, final rANS states), so
every single-bit flip fails to decode even with the container's CRC32 skipped. This is what lets
the float prior's SELF_CHECKED_BLOCKS stand in for the CRC32 (docs/format.md, What checks what)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float import prior as float_prior
from lmgc_float.formats import float_format

from lmgc_core import LMGCError, Pipeline, decompress
from lmgc_core.stream import container
from tests.paths import TESTS_DIR

DATA = TESTS_DIR / "data"
FIXTURES = TESTS_DIR / "fixtures"
DTYPES = [
    np.float32,
    ml_dtypes.bfloat16,
    np.float16,
    np.float64,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
    np.int32,
    np.uint8,
]
F_SIGN, F_ZROWS, F_ZCOLS = 4, 8, 16
F_PACK_R, F_PACK_C = 32, 64  # version 9: the row / column means packed as Rice codes
FLAGS = [
    0,
    2 | F_SIGN | F_ZROWS | F_ZCOLS | F_PACK_R | F_PACK_C,
    2 | F_SIGN | F_PACK_R | F_PACK_C,
    1 | F_SIGN | F_PACK_R,
]  # of _arrays' floats


def _varint(blob: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = blob[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _flags(block: bytes) -> int:
    """A float block's first segment's side-information flags (after kind, na, nb, side_len)."""
    at = 1
    for _ in range(3):
        _, at = _varint(block, at)
    return block[at]


def _arrays(dtype) -> list[np.ndarray]:
    """A 1-D slice of real gradients (one-row segment: mode 0), a 16 x 32 matrix with row and
    column scales, a zero row, a zero column, a -0.0 and a sign pattern (mode 2, every flag), and
    the same without zeros (mode 2 + signs) and without column scales (mode 1 + signs): rows of
    values up to 32 bits are checked in the loop that rebuilds them (fused_row), with or without
    zeros; 64-bit rows after."""
    g = g8k = np.load(DATA / "mlp_grads_8k.npy").astype(np.float64)
    g = g[:512] / np.abs(g).max()  # smooth enough to code (not store) in every format
    vec = (1 + np.abs(g) / 4) * np.sign(g) * 2.0 ** (np.arange(512) % 4 - 2)
    r, c = np.arange(16)[:, None], np.arange(32)[None, :]
    mat = ((1 + np.abs(g)) * np.sign(g)).reshape(16, 32)
    mat *= 2.0 ** (r % 5 - 2) * 2.0 ** (c * 7 % 5 - 2)
    mat[::2] *= -1
    mat[:, ::3] *= -1
    dense = np.where(mat == 0, 2.0 ** (r % 5 - 2), mat)
    rows_only = np.abs(dense) / 2.0 ** (c * 7 % 5 - 2)
    rows_only[::2] *= -1
    rows_only[:, ::3] *= -1
    vec[100] = 0.0  # an odd count of coded values: the nibble plane ends half used
    mat[3], mat[:, 5], mat[7, 9] = 0.0, 0.0, -0.0
    if np.dtype(dtype).kind in "iu":  # integers: byte planes, small magnitudes
        scale = 1e6 if np.dtype(dtype).itemsize > 1 else 3e3
        ints = np.clip(g8k[:1024] * scale, -(2**31), 2**31 - 1)
        ints = ints if np.dtype(dtype).kind == "i" else np.clip(np.abs(ints), 0, 255)
        return [ints[:512].astype(dtype), ints[512:].reshape(16, 32).astype(dtype)]
    return [a.astype(dtype) for a in (vec, mat, dense, rows_only)]


def _undetected(block: bytes, bits: np.ndarray, segs: np.ndarray, layout) -> list[tuple[int, int]]:
    k, out = fast.kernel(), np.empty_like(bits)
    silent = []
    for i in range(len(block)):
        for bit in range(8):
            changed = bytearray(block)
            changed[i] ^= 1 << bit
            try:
                k.decode(bytes(changed), out, segs, *layout)
            except ValueError:
                continue
            silent.append((i, bit))
    return silent


@pytest.mark.parametrize("simd", [True, False], ids=["avx2", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_bit_flip_of_a_block_fails_to_decode(dtype, simd):
    k = fast.kernel()
    if simd and not k.simd():
        pytest.skip("no AVX2 on this CPU")
    was = k.simd()
    k.simd(simd)
    try:
        for arr, want in zip(_arrays(dtype), FLAGS, strict=False):
            rows, cols = (1, arr.size) if arr.ndim == 1 else arr.shape
            segs = np.array([0, rows, cols], dtype=np.int64)
            bits = arr.view(f"u{arr.itemsize}")
            fmt = float_format(arr.dtype)
            layout = fast._layout(bits, fmt)
            block = k.encode(bits, segs, *layout)
            assert block[0] != 0, "a stored block: the test would not reach the coder"
            if fmt is not None:  # the side information the array is for
                assert _flags(block) == want
            out = np.empty_like(bits)
            k.decode(block, out, segs, *layout)
            assert out.tobytes() == bits.tobytes()
            assert _undetected(block, bits, segs, layout) == []
    finally:
        k.simd(was)


def _silent_flips(blob: bytes, offset: int) -> list[tuple[int, int]]:
    """(byte after ``offset``, bit) of every single-bit flip of ``blob``'s blocks that decodes
    through the whole pipeline without an error."""
    silent = []
    for i in range(offset, len(blob)):
        for bit in range(8):
            changed = bytearray(blob)
            changed[i] ^= 1 << bit
            try:
                decompress(bytes(changed))
            except LMGCError:
                continue
            silent.append((i - offset, bit))
    return silent


def test_version2_fixture_bit_flips_fail_with_the_crc_skipped(monkeypatch):
    """Version-2 blocks (still decoded) get the same checks: through the whole pipeline, with the
    switch on, every flip of a level-1 fixture's blocks raises."""
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", True)
    blob = (FIXTURES / "stream-v2-b" / "float-level1-bf16.lmgc").read_bytes()
    header, offset = container.read_header(blob)
    assert header["prior"]["fast_version"] == 2
    decompress(blob)
    assert _silent_flips(blob, offset) == []


def test_level1_stream_flips_fail_with_the_crc_skipped(monkeypatch):
    """A current level-1 stream of 2-D bfloat16 (rows, columns, zeros), the CRC32 skipped."""
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", True)
    arr = _arrays(ml_dtypes.bfloat16)[1]
    config = {"prior": {"name": "float", "level": 1, "small_parts": "level"}}
    blob = Pipeline.from_config(config).compress(arr)
    _, offset = container.read_header(blob)
    assert _silent_flips(blob, offset) == []
