"""What checks what on decoding (docs/format.md): the container skips a block's CRC32 only for
parts whose prior says it catches every changed byte itself; and the decode-path caches
(segments, factory option names) hand out what a fresh computation would."""

from __future__ import annotations

import numpy as np
import pytest
from lmgc_float import fast
from lmgc_float import prior as float_prior
from lmgc_float.formats import check_layout, cut_segments, segments

from lmgc_core import ChecksumError, LMGCError, Pipeline, StreamError, decompress
from lmgc_core.components.factories import parameters
from lmgc_core.stream import container
from tests.conftest import same_bits


def _wrong_crcs(blob: bytes) -> bytes:
    """``blob`` with every block's recorded CRC32 wrong (blocks and header otherwise intact)."""
    header, offset = container.read_header(blob)
    blocks, at = [], offset
    for part in header["parts"]:
        for entry in part["blocks"]:
            blocks.append(bytes(blob[at : at + entry[0]]))
            at += entry[0]
            entry[1] ^= 1
    return container.pack(header, blocks)


def _level1(values: np.ndarray) -> bytes:
    # small_parts="level": every block at level 1, whatever its size
    config = {"prior": {"name": "float", "block_values": 4096, "small_parts": "level"}}
    blob = Pipeline.from_config(config).compress(values)
    assert "level" not in container.read_header(blob)[0]["parts"][0]["array"]
    return blob


def test_unpack_skips_the_crc_of_named_parts_only(grads):
    bad = _wrong_crcs(_level1(grads))
    with pytest.raises(StreamError, match=r"block 0 is corrupted \(CRC32"):
        container.unpack(bad)
    box = container.unpack(bad, unverified_parts=[0])
    assert len(box.blocks) == 2


def test_level1_blocks_skip_their_crc_only_with_the_switch(grads, monkeypatch):
    bad = _wrong_crcs(_level1(grads))
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", False)
    with pytest.raises(StreamError, match="CRC32"):  # the switch is off: CRC32 checked
        decompress(bad)
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", True)
    assert same_bits(decompress(bad), grads)  # the CRC32 went unchecked


def test_level1_blocks_check_their_crc_by_default(grads):
    """The switch is off: a block's own checksum does not bind it to its place (see the swap
    test below), so a level-1 stream's block CRC32s are checked."""
    assert float_prior.SELF_CHECKED_BLOCKS is False
    with pytest.raises(StreamError, match="CRC32"):
        decompress(_wrong_crcs(_level1(grads)))


def _swapped_blocks(blob: bytes) -> bytes:
    """``blob`` with its first two blocks' bytes swapped (they must be of equal length), the
    header, recorded CRC32s included, untouched."""
    header, offset = container.read_header(blob)
    first, second = header["parts"][0]["blocks"][:2]
    assert first[0] == second[0]
    n = first[0]
    b0, b1 = blob[offset : offset + n], blob[offset + n : offset + 2 * n]
    return blob[:offset] + b1 + b0 + blob[offset + 2 * n :]


def test_swapped_level1_blocks_are_refused(grads):
    """Two level-1 blocks of equal length swapped: each passes its own value checksum, so only
    the CRC32s the header lists for the two positions can tell (with the switch on, this decoded
    without an error into the wrong values)."""
    x = np.ascontiguousarray(grads[:4096], dtype=np.float32)
    # the same values with the lowest mantissa bit of each nonzero one flipped: the same coded
    # symbols, so blocks of equal length, but other values
    bits = x.view(np.uint32)
    y = np.where(bits & 0x7FFFFFFF, bits ^ np.uint32(1), bits).view(np.float32)
    values = np.concatenate([x, y])
    blob = _level1(values)
    assert same_bits(decompress(blob), values)
    with pytest.raises(LMGCError, match="CRC32"):
        decompress(_swapped_blocks(blob))


def test_with_the_switch_a_changed_value_still_fails(grads, monkeypatch):
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", True)
    blob = bytearray(_level1(grads))
    blob[-40] ^= 0x10  # inside the last block's body: its raw mantissa bits
    with pytest.raises(LMGCError, match=r"block 1\b"):
        decompress(bytes(blob))


def test_level2_blocks_keep_their_crc_with_the_switch(grads, monkeypatch):
    """A small part coded at level 2 inside a level-1 stream: its range coder ignores some bits,
    so its CRC32 is always checked."""
    monkeypatch.setattr(float_prior, "SELF_CHECKED_BLOCKS", True)
    blob = Pipeline.from_config({"prior": {"name": "float", "block_values": 64}}).compress(
        grads[:600]
    )
    assert container.read_header(blob)[0]["parts"][0]["array"]["level"] == 2
    with pytest.raises(StreamError, match="CRC32"):
        decompress(_wrong_crcs(blob))


def test_segments_are_cached_and_equal_a_fresh_cut():
    layout = check_layout([[64, 3, 3, 3], [64], [10, 576], [10]] * 50)
    first = segments((1, 108_900), layout, 4096)
    assert segments((1, 108_900), layout, 4096) is first
    assert first == cut_segments((1, 108_900), layout, 4096)
    assert segments((108_900,), None, 4096) == cut_segments((108_900,), None, 4096)
    # an unchecked (list) layout is cut afresh, not refused
    assert segments((20,), [[4, 5]], 8) == cut_segments((20,), ((4, 5),), 8)


def test_parameters_are_cached_but_handed_out_as_copies():
    def factory(a: int = 1, *, b: int = 2) -> None: ...

    names = parameters(factory)
    assert names == ["a", "b"]
    names.append("c")
    assert parameters(factory) == ["a", "b"]


# -- block_sums (fast_version 7): the header's list of the blocks' checksums binds them ----------


def _twins(grads) -> tuple[np.ndarray, np.ndarray]:
    """Two arrays of 16,384 values that code to blocks of equal length (the second with the
    lowest mantissa bit of each nonzero value flipped: the same coded symbols, other values)."""
    x = np.concatenate([grads, grads * np.float32(2)]).astype(np.float32)
    bits = x.view(np.uint32)
    return x, np.where(bits & 0x7FFFFFFF, bits ^ np.uint32(1), bits).view(np.float32)


def _sums_stream(values: np.ndarray) -> bytes:
    config = {"prior": {"name": "float", "block_values": 16384, "small_parts": "level"}}
    blob = Pipeline.from_config(config).compress(values)
    meta = container.read_header(blob)[0]["parts"][0]["array"]
    assert isinstance(meta[fast.BLOCK_SUMS], str) and len(meta[fast.BLOCK_SUMS]) == 16
    return blob


def test_a_part_of_64_kb_or_more_records_block_sums_and_skips_its_crcs(grads):
    x, y = _twins(grads)
    values = np.concatenate([x, y])
    blob = _sums_stream(values)
    assert same_bits(decompress(_wrong_crcs(blob)), values)  # the CRC32s went unchecked
    small = _level1(grads)  # 27 KB of blocks: no list, the CRC32s are checked
    assert fast.BLOCK_SUMS not in container.read_header(small)[0]["parts"][0]["array"]


def test_swapped_blocks_are_refused_by_block_sums(grads):
    x, y = _twins(grads)
    blob = _sums_stream(np.concatenate([x, y]))
    with pytest.raises(ChecksumError, match="not the ones the header lists"):
        decompress(_swapped_blocks(blob))


def test_a_block_from_another_stream_is_refused_by_block_sums(grads):
    """The second stream's first block (y's) in the first stream's first place: it passes its
    own checksum and the length the header lists; only the list tells."""
    x, y = _twins(grads)
    first, second = _sums_stream(np.concatenate([x, y])), _sums_stream(np.concatenate([y, y]))
    header, offset = container.read_header(first)
    n = header["parts"][0]["blocks"][0][0]
    other = container.read_header(second)[1]
    spliced = first[:offset] + second[other : other + n] + first[offset + n :]
    with pytest.raises(ChecksumError, match="not the ones the header lists"):
        decompress(spliced)


@pytest.mark.parametrize("recorded", ["0" * 16, 7, None])
def test_another_recorded_list_is_refused(grads, recorded):
    x, y = _twins(grads)
    blob = _sums_stream(np.concatenate([x, y]))
    unpacked = container.unpack(blob)
    header = unpacked.header
    header["parts"][0]["array"][fast.BLOCK_SUMS] = recorded
    forged = container.pack(header, [bytes(b) for b in unpacked.blocks])
    with pytest.raises(ChecksumError, match="not the ones the header lists"):
        decompress(forged)


def test_without_block_sums_the_crcs_are_checked_again(grads):
    """A fast_version 6 stream (no list): its blocks' CRC32s are what binds them."""
    x, y = _twins(grads)
    values = np.concatenate([x, y])
    unpacked = container.unpack(_sums_stream(values))
    header = unpacked.header
    del header["parts"][0]["array"][fast.BLOCK_SUMS]
    blob = container.pack(header, [bytes(b) for b in unpacked.blocks])
    assert same_bits(decompress(blob), values)
    with pytest.raises(StreamError, match="CRC32"):
        decompress(_wrong_crcs(blob))
