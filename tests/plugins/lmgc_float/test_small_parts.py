"""Level 1 on small parts (issue 20): a new level-1 prior codes a part of at most
``SMALL_VALUES`` values at both levels and keeps level 2 where it is clearly smaller
(``SMALL_GAIN``), and the part's ``meta`` names the
level that coded it; streams made without ``small_parts`` (every older one) code and decode as
before, and big parts take the very same path and bytes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from lmgc_float import prior as float_prior

import lmgc_core
from lmgc_core import ChecksumError, ConfigError, Pipeline
from lmgc_core.components import registry
from lmgc_core.stream import container
from tests.paths import TESTS_DIR

GRADS = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy")
OLD = {"prior": {"name": "float", "level": 1, "small_parts": "level"}}
"""Level 1 as before the choice: every part at level 1 (what a recorded config without
``small_parts`` rebuilds)."""


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _part(blob: bytes) -> tuple[dict, list[bytes]]:
    """The first part's ``meta`` and coded blocks."""
    unpacked = container.unpack(blob)
    part = unpacked.header["parts"][0]
    return part[part["coding"]], [bytes(b) for b in unpacked.blocks]


def _with_specials(arr: np.ndarray) -> np.ndarray:
    """``arr`` (float32) with NaN payloads, infinities, -0.0 and subnormals mixed in."""
    out = arr.astype(np.float32).copy()
    bits = out.view(np.uint32)
    bits[::101] = 0x7FC00001  # a quiet NaN with a payload
    bits[7::211] = 0xFF800000  # -inf
    bits[11::307] = 0x80000000  # -0.0
    bits[13::401] = 0x00000003  # a subnormal
    return out


def test_small_part_keeps_the_smaller_level_and_says_so():
    """README's grads.npy: level 2 codes it smaller, so the part is level 2 and its meta says
    so; the blocks are exactly level 2's, each followed by its 16-byte checksum."""
    new = Pipeline.from_config({}).compress(GRADS)
    meta, blocks = _part(new)
    assert meta["level"] == 2
    assert lmgc_core.read_header(new)["pipeline"]["prior"]["small_parts"] == "smaller"
    _, fast_blocks = _part(Pipeline.from_config(OLD).compress(GRADS))
    _, top_blocks = _part(Pipeline.from_config({"level": 2}).compress(GRADS))
    assert [b[:-16] for b in blocks] == top_blocks
    assert sum(map(len, blocks)) < sum(map(len, fast_blocks))
    assert _same(lmgc_core.decompress(new), GRADS)


@pytest.mark.parametrize(("rows", "level"), [(2, 1), (7, 2)])
def test_level_2_only_where_it_is_clearly_smaller(rows, level):
    """Real gradients, 4,096 per row: level 2 saves 2.3 % on two rows, under SMALL_GAIN's
    1/32, so the part stays at level 1 (~30x faster to decode); 3.7 % on seven rows, so it is
    level 2. Either way the stream decodes bit-exact."""
    grads = np.load(TESTS_DIR / "data" / "mlp_digits_grads_slice.npy")[:rows]
    _, fast_blocks = _part(Pipeline.from_config(OLD).compress(grads))
    _, top_blocks = _part(Pipeline.from_config({"level": 2}).compress(grads))
    fast, top = sum(map(len, fast_blocks)), sum(map(len, top_blocks)) + 16 * len(top_blocks)
    assert top < fast  # level 2 is smaller in both cases
    assert (top * float_prior.SMALL_GAIN < fast * (float_prior.SMALL_GAIN - 1)) == (level == 2)
    new = Pipeline.from_config({}).compress(grads)
    meta, _ = _part(new)
    assert meta.get("level", 1) == level
    assert _same(lmgc_core.decompress(new), grads)


def test_small_part_keeps_level_1_where_it_is_smaller():
    """Uniform random bits: level 1 stores the noise raw and is smaller; the meta has no level
    (the stream's) and the blocks are the old level-1 blocks."""
    noise = np.random.default_rng(1).integers(0, 2**32, 4096, dtype=np.uint32).view(np.float32)
    new = Pipeline.from_config({}).compress(noise)
    meta, blocks = _part(new)
    assert "level" not in meta
    assert blocks == _part(Pipeline.from_config(OLD).compress(noise))[1]
    assert _same(lmgc_core.decompress(new), noise)


@pytest.mark.parametrize(
    "arr",
    [
        _with_specials(GRADS[:3000]).reshape(30, 100),
        GRADS[:2048].astype(np.float64),
        np.clip(np.rint(GRADS * 2**14), -(2**15), 2**15 - 1).astype(np.int16),
        np.random.default_rng(2).integers(0, 2**32, 1000, dtype=np.uint32).view(np.float32),
        np.zeros(0, np.float32),
    ],
    ids=["float32-specials", "float64", "int16", "noise", "empty"],
)
def test_both_choices_decode_bit_exact(arr):
    """Whichever level a part takes, the default pipeline, a level-2 pipeline and a level-1
    pipeline without the choice all decode it (the choice is not part of decoding)."""
    blob = Pipeline.from_config({}).compress(arr)
    for decoder in ({}, {"level": 2}, OLD):
        assert _same(Pipeline.from_config(decoder).decompress(blob), arr)
    assert _same(lmgc_core.decompress(blob, jobs=2), arr)


def test_old_streams_and_recorded_configs_keep_every_part_at_level_1():
    """A recorded level-1 config without ``small_parts`` (a stream header, a fixture's index)
    rebuilds the old behaviour, so old streams re-encode byte for byte; a new pipeline decodes
    them."""
    with registry.recorded():
        recorded = Pipeline.from_config({"prior": {"name": "float", "level": 1}})
    assert recorded.prior.small_parts == "level"
    assert "small_parts" not in recorded.recorded_config()["prior"]
    old = Pipeline.from_config(OLD).compress(GRADS)
    assert recorded.compress(GRADS) == old
    # the full config names it, so a new config rebuilds the same pipeline
    assert recorded.get_config()["prior"]["small_parts"] == "level"
    assert Pipeline.from_config(recorded.get_config()).compress(GRADS) == old
    assert "level" not in _part(old)[0]
    assert _same(Pipeline.from_config({}).decompress(old), GRADS)


def test_big_part_is_unchanged():
    """A part of more than SMALL_VALUES values takes level 1's path: the same blocks as before
    the choice, no level in its meta."""
    big = np.resize(GRADS, float_prior.SMALL_VALUES + 1)
    meta, blocks = _part(Pipeline.from_config({}).compress(big))
    assert "level" not in meta
    assert blocks == _part(Pipeline.from_config(OLD).compress(big))[1]


def test_a_small_level_2_part_checks_its_values():
    """A level-1 stream has no SHA-256 of the array: a level-2 part's blocks carry the checksum
    of their values, so altered values (here: the checksum itself) are refused."""
    blob = Pipeline.from_config({}).compress(GRADS)
    header, offset = container.read_header(blob)
    assert header["checksum"] == "blocks-xxh3-128" and "sha256" not in header
    ((size, _),) = header["parts"][0]["blocks"]
    block = bytearray(blob[offset : offset + size])
    block[-1] ^= 1
    header["parts"][0]["blocks"] = [[size, zlib.crc32(block)]]
    with pytest.raises(ChecksumError, match="checksum"):
        lmgc_core.decompress(container.pack(header, [bytes(block)]))


def test_delta_of_a_small_part_keeps_the_smaller_level():
    """The delta path: a small tensor against its base is coded at both levels, the smaller
    kept; the delta's meta always names its level."""
    base = GRADS[:512].reshape(8, 64).copy()
    rng = np.random.default_rng(7)
    new = base + base * rng.standard_normal(base.shape).astype(np.float32) * 1e-3
    blob = Pipeline.from_config({}).compress(new, base=base)
    old = Pipeline.from_config(OLD).compress(new, base=base)
    top = Pipeline.from_config({"level": 2}).compress(new, base=base)
    assert lmgc_core.read_header(blob)["parts"][0]["coding"] == "delta"
    assert _part(blob) == _part(top) and _part(blob)[0]["level"] == 2
    assert len(_part(top)[1][0]) < len(_part(old)[1][0])
    assert _same(lmgc_core.decompress(blob, base=base), new)
    assert _same(Pipeline.from_config(OLD).decompress(blob, base=base), new)


def test_option_values():
    assert float_prior.FloatPrior().small_parts == "smaller"
    assert float_prior.FloatPrior(level=2, small_parts="smaller").small_parts == "level"
    assert "small_parts" not in float_prior.FloatPrior(level=2).get_config()
    with pytest.raises(ConfigError, match="small_parts"):
        float_prior.FloatPrior(small_parts="fast")
