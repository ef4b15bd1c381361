"""The fast level's table scale since FAST_VERSION 5: each float block's symbol table sums to
2^sb, 11 <= sb <= 15, named by bits 5-7 of its kind byte (15 - sb); blocks of versions 3 and 4
have them clear. The encoder picks sb per block from the counts alone (integer arithmetic), so
the choice is part of the bytes every machine writes (test_fast_level.test_fixed_bytes)."""

from __future__ import annotations

import hashlib
import json

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float.codec import seg_array
from lmgc_float.formats import as_uint, float_format, segments

from tests.paths import TESTS_DIR

K = fast.kernel()
SLICE = np.load(TESTS_DIR / "data" / "mlp_digits_grads_slice.npy")  # 7 x 4096 real gradients
SMALL = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy")


def _inputs() -> dict[str, np.ndarray]:
    """Real gradients whose blocks pick different scales (since version 8 the coarsest within
    2^-8 of the block's bytes): a small block's table pays most for its size, and a dense f32
    block is as small at 11; bfloat16 values of four spreads have many rare symbols, which need
    a finer table (12), and more so with heavy tails (13: each value scaled by 4^k, k the
    trailing zero bits of its 1-based index, so P(k) = 2^-(k+1))."""
    spreads = np.concatenate([SLICE.ravel() * s for s in (1, 1e-3, 1e3, 7)])
    index = np.arange(1, spreads.size + 1)
    tails = spreads * (index & -index) ** 2  # integers: the same values on every CPU
    return {
        "small": SMALL,
        "dense": SLICE.ravel(),
        "spreads": spreads.astype(ml_dtypes.bfloat16),
        "tails": tails.astype(ml_dtypes.bfloat16),
    }


def _block(arr: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    fmt = float_format(arr.dtype)
    bits = as_uint(arr.reshape(-1))
    (cut,), _ = segments(bits.shape, None, 1 << 18)
    segs = seg_array(cut)
    width = 8 * bits.dtype.itemsize
    return K.encode(bits, segs, width, fmt.exponent_bits, fmt.mantissa_bits), bits, segs


def _decode(block: bytes, bits: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """f32 or bf16 (every input here), by width."""
    out = np.empty_like(bits)
    ebits, mbits = (8, 23) if bits.itemsize == 4 else (8, 7)
    K.decode(block, out, segs, 8 * bits.dtype.itemsize, ebits, mbits)
    return out


@pytest.mark.parametrize(
    ("name", "scale"), [("small", 11), ("dense", 11), ("spreads", 12), ("tails", 13)]
)
def test_each_block_names_its_scale_and_decodes(name, scale):
    block, bits, segs = _block(_inputs()[name])
    assert block[0] & 0x13 == 0x13  # version 3's fields, XXH3-128 (bits 2-3: test_states.py)
    assert 15 - (block[0] >> 5) == scale
    assert _decode(block, bits, segs).tobytes() == bits.tobytes()


@pytest.mark.parametrize("name", ["small", "dense", "spreads", "tails"])
def test_another_scale_is_refused(name):
    """The table's frequencies sum to 2^sb: read at any other scale the table is refused, so an
    edited kind byte never decodes."""
    block, bits, segs = _block(_inputs()[name])
    down = block[0] >> 5
    for other in range(8):
        if other == down:
            continue
        edited = bytes([(block[0] & 0x1F) | other << 5]) + block[1:]
        message = "unknown block kind" if other > 4 else "damaged symbol stream"
        with pytest.raises(ValueError, match=message):
            _decode(edited, bits, segs)


def test_scale_bits_only_in_a_version_5_block():
    """A MurmurHash3 block (versions 2 and 3) or a version-2 float block with scale bits set is
    not one the encoder writes: refused by its kind before anything is read."""
    block, bits, segs = _block(SMALL)
    assert block[0] >> 5 == 4
    for kind in (0x03, 0x01, 0x11):
        with pytest.raises(ValueError, match="unknown block kind"):
            _decode(bytes([kind | 4 << 5]) + block[1:], bits, segs)


@pytest.mark.parametrize(
    ("name", "dtype", "layout"),
    [("float-level1.lmgc", np.float32, (8, 23)), ("float-level1-bf16.lmgc", "bfloat16", (8, 7))],
)
def test_a_version_4_block_reads_at_scale_15(name, dtype, layout):
    """Blocks written before the scale was chosen (fast_version 4) have the bits clear and
    decode at 2^15: committed fixtures of version 4, their blocks through the kernel, against
    the values their index records (tests/files/test_fixtures.py decodes every stream whole)."""
    from lmgc_core.stream.container import unpack

    folder = TESTS_DIR / "fixtures" / "stream-v5-fast4"
    stream = unpack((folder / name).read_bytes())
    want = json.loads((folder / "index.json").read_text())["files"][name]["expected"]["sha256"]
    assert stream.header["prior"]["fast_version"] == 4
    (part,) = stream.header["parts"]
    shape = tuple(part["array"]["shape"])
    cuts, _ = segments(shape, None, 1 << 18)
    width = 8 * np.dtype(dtype).itemsize
    out = np.empty(int(np.prod(shape)), dtype=f"u{width // 8}")
    assert len(cuts) == len(stream.blocks)
    for block, cut in zip(stream.blocks, cuts, strict=True):
        assert block[0] == 0x13  # scale bits clear
        K.decode(bytes(block), out, seg_array(cut), width, *layout)
    assert hashlib.sha256(out.tobytes()).hexdigest() == want
