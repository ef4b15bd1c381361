"""Level-1 blocks cut where their tensors' statistics change (issue 20, PP-OCRv4 bfloat16): the
encoder codes runs of a block's segments as blocks of their own when separate frequency tables
pay for themselves, the part's ``splits`` says where, and decoding regroups the segments the
same way. Homogeneous blocks keep their bytes; a forged or missing ``splits`` is refused."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float.codec import seg_array
from lmgc_float.formats import as_uint, float_format, segments

from lmgc_core import Pipeline, decompress
from lmgc_core.stream import container
from lmgc_core.util.errors import StreamError
from tests.paths import TESTS_DIR

GRADS = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy").astype(np.float32).reshape(-1)
MIXED = np.concatenate([GRADS] * 4 + [GRADS * GRADS] * 4)
"""Real gradients, then their squares (Adam's second moment): exponents spread twice as wide,
so one table for both costs ~700 bytes on 65,536 values."""
LAYOUT = [[256, 128], [256, 128]]


def _pipe(**options) -> Pipeline:
    """Level 1 coding every part at level 1 (these parts are small enough for small_parts)."""
    return Pipeline.from_config(
        {"prior": {"name": "float", "level": 1, "small_parts": "level", **options}}
    )


def _meta(blob: bytes) -> dict:
    part = container.unpack(blob).header["parts"][0]
    return part[part["coding"]]


def _forged(blob: bytes, **meta) -> bytes:
    """``blob`` with its part's metadata changed (a valid container: only decoding can tell)."""
    unpacked = container.unpack(blob)
    header = unpacked.header
    part = header["parts"][0]
    new = {k: v for k, v in part[part["coding"]].items() if k != "splits"}
    new.update({k: v for k, v in meta.items() if v is not None})
    header["parts"] = [{**part, part["coding"]: new}]
    return container.pack(header, [bytes(b) for b in unpacked.blocks])


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_a_block_of_two_kinds_of_tensor_is_split_and_smaller(dtype):
    arr = MIXED.astype(dtype)
    blob = _pipe(layout=LAYOUT).compress(arr)
    assert _meta(blob)["splits"] == [1]  # the squares start a block of their own
    assert len(container.unpack(blob).blocks) == 2
    assert decompress(blob).tobytes() == arr.tobytes()
    assert _pipe(layout=LAYOUT).decompress(blob, jobs=2).tobytes() == arr.tobytes()
    # one block for both (what the shape's cut gives) is ~700 bytes bigger
    cuts, _ = segments(arr.shape, tuple(map(tuple, LAYOUT)), 1 << 18)
    whole = fast.encode_blocks(as_uint(arr), cuts, float_format(arr.dtype), 1)
    assert len(whole) == 1
    assert sum(map(len, container.unpack(blob).blocks)) < sum(map(len, whole)) - 500


def test_homogeneous_blocks_keep_their_bytes():
    """A block whose runs would not pay is coded as encode() codes it, and the part has no
    ``splits`` (every stream made before splits decodes as it always did)."""
    arr = np.concatenate([GRADS] * 8)
    cuts, _ = segments(arr.shape, ((256, 128), (256, 128)), 1 << 18)
    k, fmt = fast.kernel(), float_format(arr.dtype)
    runs = k.encode_split(
        as_uint(arr), seg_array(cuts[0]), 32, fmt.exponent_bits, fmt.mantissa_bits
    )
    assert [count for _, count in runs] == [2]
    assert runs[0][0] == k.encode(
        as_uint(arr), seg_array(cuts[0]), 32, fmt.exponent_bits, fmt.mantissa_bits
    )
    blob = _pipe(layout=LAYOUT).compress(arr)
    assert "splits" not in _meta(blob)
    assert decompress(blob).tobytes() == arr.tobytes()


def test_regroup_cuts_blocks_at_the_splits():
    blocks = [[(0, 1, 4), (4, 1, 4), (8, 1, 4)], [(12, 2, 4)], [(20, 1, 4), (24, 1, 4)]]
    assert fast.regroup(blocks, [1, 2, 5]) == [
        [(0, 1, 4)],
        [(4, 1, 4)],
        [(8, 1, 4)],
        [(12, 2, 4)],
        [(20, 1, 4)],
        [(24, 1, 4)],
    ]
    assert fast.regroup(blocks, [2]) == [
        [(0, 1, 4), (4, 1, 4)],
        [(8, 1, 4)],
        [(12, 2, 4)],
        [(20, 1, 4), (24, 1, 4)],
    ]


@pytest.mark.parametrize(
    "splits",
    [[], 1, "1", [True], [1.0], [0], [-1], [2], [1, 1], [3, 1], [4], [10**30], None],
)
def test_forged_splits_are_refused(splits):
    """Splits the encoder never writes (empty, not integers, not increasing, at a block's start,
    past the part), or none where the blocks need them, are a StreamError before decoding."""
    blob = _pipe(layout=LAYOUT).compress(MIXED)
    assert _meta(blob)["splits"] == [1]
    forged = _forged(blob, splits=splits)
    with pytest.raises(StreamError):
        decompress(forged)


def test_splits_in_a_level_2_part_are_refused():
    blob = Pipeline.from_config({"prior": {"name": "float", "level": 1}}).compress(GRADS[:512])
    assert _meta(blob)["level"] == 2  # a small part, coded at level 2
    with pytest.raises(StreamError, match="splits"):
        decompress(_forged(blob, splits=[1]))


def test_too_many_blocks_keep_the_plain_cut(monkeypatch):
    """A part whose blocks and splits would crowd the header's cap on JSON values is coded with
    the shape's cut (here the cap is lowered so that one split is too many)."""
    monkeypatch.setattr(fast, "MAX_BLOCKS", 3)
    blob = _pipe(layout=LAYOUT).compress(MIXED)
    assert "splits" not in _meta(blob)
    assert len(container.unpack(blob).blocks) == 1
    assert decompress(blob).tobytes() == MIXED.tobytes()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_split_blocks_round_trip_specials_and_zero_rows(dtype):
    """Runs take their share of every field: side information with zero-row bitmaps, NaN
    payloads, infinities, -0.0 and subnormals (each run's checksum covers its own values)."""
    arr = MIXED.copy()
    arr[128 * 10 : 128 * 20] = 0  # ten zero rows in the gradients
    arr[32768 + 128 * 3 : 32768 + 128 * 4] = -0.0  # a row of -0.0 in the squares
    arr[5], arr[40000], arr[40001] = np.nan, np.inf, 1e-45
    arr.view(np.uint32)[50000] = 0x7FC00123
    arr = arr.astype(dtype)
    blob = _pipe(layout=LAYOUT).compress(arr)
    assert _meta(blob)["splits"] == [1]
    assert decompress(blob).tobytes() == arr.tobytes()
