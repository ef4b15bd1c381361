"""What checks what on decoding (docs/format.md): the container skips a block's CRC32 only for
parts whose prior says it catches every changed byte itself; and the decode-path caches
(segments, factory option names) hand out what a fresh computation would."""

from __future__ import annotations

import numpy as np
import pytest
from lmgc_float import prior as float_prior
from lmgc_float.formats import check_layout, cut_segments, segments

from lmgc_core import LMGCError, Pipeline, StreamError, decompress
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
