"""A tensor coded against its base through the Pipeline (issue 21): the real float prior's delta
path, the header's base record, and refusals of a missing or wrong base."""

from __future__ import annotations

import hashlib
import zlib

import ml_dtypes
import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import lmgc_core
from lmgc_core import ConfigError, MismatchError, Pipeline, StreamError
from lmgc_core.coding.pipeline import base_sha256
from lmgc_core.stream import container
from tests.paths import TESTS_DIR

GRADS = np.load(TESTS_DIR / "data" / "mlp_grads_8k.npy")


def _pair(dtype: str = "float32", shape: tuple[int, ...] = (64, 96)) -> tuple[np.ndarray, ...]:
    """A base and a nearby 'next checkpoint' (a few ulps away, some values replaced)."""
    n = int(np.prod(shape))
    base = np.resize(GRADS.astype(np.float32), n).reshape(shape)
    rng = np.random.default_rng(7)
    new = base + base * rng.standard_normal(shape).astype(np.float32) * 1e-3
    new.reshape(-1)[::97] = rng.standard_normal(new.size // 97 + 1).astype(np.float32)
    if dtype == "bfloat16":
        return new.astype(ml_dtypes.bfloat16), base.astype(ml_dtypes.bfloat16)
    return new.astype(dtype), base.astype(dtype)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "int32"])
def test_round_trip_with_base_is_exact_and_smaller(level: int, dtype: str) -> None:
    new, base = _pair(dtype)
    pipe = Pipeline.from_config(level=level)
    alone = pipe.compress(new)
    blob = pipe.compress(new, base=base, base_name="step-100")
    header = lmgc_core.read_header(blob)
    assert header["base"] == {
        "sha256": hashlib.sha256(base.tobytes()).hexdigest(),
        "xxh3_128": xxhash.xxh3_128_hexdigest(base.tobytes()),
        "name": "step-100",
    }
    assert [p["coding"] for p in header["parts"]] == ["delta"]
    assert _same(pipe.decompress(blob, base=base), new)
    assert _same(lmgc_core.decompress(blob, base=base), new)  # from the header alone
    if dtype != "int32":
        assert len(blob) < len(alone)


@pytest.mark.parametrize("level", [1, 2])
def test_delta_blocks_name_their_checksum_by_the_meta_version(level: int) -> None:
    """Version 3's blocks end with XXH3-128 of their values; a header edited to say version 2
    (MurmurHash3_x64_128, still read) makes every block's check fail, never decode."""
    new, base = _pair()
    blob = Pipeline.from_config(level=level).compress(new, base=base)
    header, offset = container.read_header(blob)
    meta = header["parts"][0]["delta"]
    assert meta["version"] == 3
    header["parts"][0]["delta"] = {**meta, "version": 2}
    with pytest.raises(lmgc_core.ChecksumError, match="checksum"):
        lmgc_core.decompress(container.pack(header, [blob[offset:]]), base=base)


def test_base_hash_is_of_the_bytes() -> None:
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base)
    assert lmgc_core.read_header(blob)["base"] == {
        "sha256": hashlib.sha256(base).hexdigest(),
        "xxh3_128": xxhash.xxh3_128_hexdigest(base.tobytes()),
    }


def test_missing_base_is_refused_by_name() -> None:
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base, base_name="ckpt-0050.safetensors")
    with pytest.raises(MismatchError, match=r"ckpt-0050\.safetensors.*base="):
        lmgc_core.decompress(blob)
    with pytest.raises(MismatchError, match="ckpt-0050"):
        Pipeline.from_config().decompress(blob)


def test_another_base_is_refused_before_decoding() -> None:
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base, base_name="b")
    other = base.copy()
    other.reshape(-1)[5] = np.nextafter(other.reshape(-1)[5], np.float32(np.inf))
    named = f"not the stream's base 'b' .SHA-256 {base_sha256(base)}"
    with pytest.raises(MismatchError, match=named):
        lmgc_core.decompress(blob, base=other)
    with pytest.raises(MismatchError, match="dtype and shape"):
        lmgc_core.decompress(blob, base=base.reshape(-1))
    with pytest.raises(MismatchError, match="dtype and shape"):
        lmgc_core.decompress(blob, base=base.astype(np.float64))


def _with_base_entry(blob: bytes, entry: dict) -> bytes:
    header, offset = container.read_header(blob)
    return container.pack({**header, "base": entry}, [blob[offset:]])


def test_the_base_is_checked_by_its_xxh3_128_where_recorded() -> None:
    """A stream records the base's XXH3-128 beside its SHA-256 and decoding checks the XXH3-128
    (~7x faster): a header whose XXH3-128 names another base refuses the right one, naming the
    hash it checked; one without it (every stream before 2026-12-05) is checked by SHA-256."""
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base, base_name="b")
    entry = lmgc_core.read_header(blob)["base"]
    other = dict(entry, xxh3_128="0" * 32)
    said = f"its XXH3-128 is {entry['xxh3_128']}, the stream records {'0' * 32}"
    with pytest.raises(MismatchError, match=said):  # two hashes of one kind, side by side
        lmgc_core.decompress(_with_base_entry(blob, other), base=base)
    old = {k: v for k, v in entry.items() if k != "xxh3_128"}
    assert _same(lmgc_core.decompress(_with_base_entry(blob, old), base=base), new)
    changed = base.copy()
    changed.reshape(-1)[0] = -changed.reshape(-1)[0]
    with pytest.raises(MismatchError, match="its SHA-256 is " + base_sha256(changed)):
        lmgc_core.decompress(_with_base_entry(blob, old), base=changed)
    for bad in ("0" * 31, 5, None):
        with pytest.raises(StreamError, match="bad base entry"):
            lmgc_core.decompress(_with_base_entry(blob, dict(entry, xxh3_128=bad)), base=base)


def test_a_stream_without_base_ignores_a_given_base() -> None:
    new, base = _pair()
    blob = lmgc_core.compress(new)
    assert "base" not in lmgc_core.read_header(blob)
    assert blob == lmgc_core.compress(new, base=None)
    assert _same(lmgc_core.decompress(blob, base=base), new)


def test_refused_where_no_delta_can_be_coded() -> None:
    new, base = _pair()
    with pytest.raises(ConfigError, match="no delta path"):
        Pipeline.from_config(prior="adaptive").compress(new[:2], base=base[:2])
    with pytest.raises(ConfigError, match="stages"):
        Pipeline.from_config(stages=[{"name": "quantize", "bits": 8}]).compress(new, base=base)
    with pytest.raises(ConfigError, match="dtype and shape"):
        lmgc_core.compress(new, base=base.T)
    with pytest.raises(ConfigError, match="dtype and shape"):
        lmgc_core.compress(new, base=base.astype(np.float64))


def _repack(blob: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    header, _ = container.read_header(blob)
    box = container.unpack(blob)
    edit(header)
    return container.pack(header, list(box.blocks))


def test_a_bad_base_entry_or_a_delta_part_without_one_is_a_stream_error() -> None:
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base)
    bad = _repack(blob, lambda h: h.__setitem__("base", {"sha256": 5}))
    with pytest.raises(StreamError, match="bad base entry"):
        lmgc_core.decompress(bad, base=base)
    dropped = _repack(blob, lambda h: h.pop("base"))
    with pytest.raises(StreamError, match="records no base"):
        lmgc_core.decompress(dropped, base=base)


def test_a_damaged_delta_block_is_caught() -> None:
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base)
    header, _ = container.read_header(blob)
    # flip one bit in the middle of the first block, then fix its CRC so the kernel must catch it
    blocks = [bytearray(b) for b in container.unpack(blob).blocks]
    blocks[0][len(blocks[0]) // 2] ^= 0x10
    parts = header["parts"]
    parts[0]["blocks"][0] = [len(blocks[0]), zlib.crc32(bytes(blocks[0]))]
    with pytest.raises(StreamError):
        lmgc_core.decompress(container.pack(header, [bytes(b) for b in blocks]), base=base)


@pytest.mark.parametrize("level", [1, 2])
def test_delta_values_are_checked_by_their_blocks_not_by_a_second_pass(
    level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every delta block checks its values against its own checksum, so decoding skips the
    SHA-256 pass over the whole array (issue 21's decode speed) and still refuses values that
    differ: here a block whose checksum was changed (its CRC32 fixed) is a ChecksumError."""
    from lmgc_core import ChecksumError
    from lmgc_core.coding import pipeline

    new, base = _pair()
    blob = Pipeline.from_config(level=level).compress(new, base=base)

    def no_hash(array: np.ndarray) -> str:
        raise AssertionError("the decoded array was hashed again")

    monkeypatch.setattr(pipeline, "_sha256", no_hash)
    assert _same(lmgc_core.decompress(blob, base=base), new)
    header, _ = container.read_header(blob)
    blocks = [bytearray(b) for b in container.unpack(blob).blocks]
    blocks[0][-1] ^= 0x01  # the last byte of the block's 16-byte checksum of its values
    header["parts"][0]["blocks"][0] = [len(blocks[0]), zlib.crc32(bytes(blocks[0]))]
    with pytest.raises(ChecksumError, match="checksum"):
        lmgc_core.decompress(container.pack(header, [bytes(b) for b in blocks]), base=base)


def test_a_delta_of_thousands_of_values_stays_at_level_1() -> None:
    """Level 1 codes a small delta at both levels only up to DELTA_SMALL_VALUES values: a
    bigger one stays at level 1 (its fast decode) even where level 2 would be a little
    smaller, as it is here."""
    from lmgc_float.prior import DELTA_SMALL_VALUES

    new, base = _pair(shape=(64, 96))
    assert new.size > DELTA_SMALL_VALUES
    blob = Pipeline.from_config({}).compress(new, base=base)
    top = Pipeline.from_config({"level": 2}).compress(new, base=base)
    assert len(top) < len(blob)
    assert lmgc_core.read_header(blob)["parts"][0]["delta"]["level"] == 1
    assert _same(lmgc_core.decompress(blob, base=base), new)


def test_delta_blocks_are_crc_checked_with_the_priors_crc32(monkeypatch) -> None:
    """The encoder lists, and the container checks, a delta stream's block CRC32s with the
    prior's compiled CRC-32 (zlib's values, faster); a block whose bytes differ from its
    header's CRC32 is refused."""
    from lmgc_float.prior import FloatPrior

    seen: list[int] = []

    def counted(data) -> int:  # type: ignore[no-untyped-def]
        seen.append(len(data))
        return zlib.crc32(data)

    monkeypatch.setattr(FloatPrior, "block_crc32", property(lambda self: counted))
    new, base = _pair()
    blob = lmgc_core.compress(new, base=base)
    header, _ = container.read_header(blob)
    sizes = [size for size, _ in header["parts"][0]["blocks"]]
    assert seen == sizes  # the encoder's CRC32s too
    seen.clear()
    assert _same(lmgc_core.decompress(blob, base=base), new)
    assert seen == sizes
    blocks = [bytearray(b) for b in container.unpack(blob).blocks]
    blocks[0][3] ^= 0x20  # the header's CRC32 left as it was
    with pytest.raises(StreamError, match="CRC32"):
        lmgc_core.decompress(container.pack(header, [bytes(b) for b in blocks]), base=base)


BIT_DTYPES = {
    "float32": np.uint32,
    "float64": np.uint64,
    "float16": np.uint16,
    "bfloat16": np.uint16,
    "int16": np.uint16,
}


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(sorted(BIT_DTYPES)),
    st.integers(0, 300),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1, 2]),
    st.sampled_from(["random", "near", "same"]),
)
def test_any_bit_pattern_round_trips_against_any_base(
    dtype: str, n: int, seed: int, level: int, kind: str
) -> None:
    rng = np.random.default_rng(seed)
    raw = BIT_DTYPES[dtype]
    bits = rng.integers(0, np.iinfo(raw).max, size=n, dtype=raw, endpoint=True)
    if kind == "random":
        base_bits = rng.integers(0, np.iinfo(raw).max, size=n, dtype=raw, endpoint=True)
    elif kind == "near":
        base_bits = bits + rng.integers(-3, 4, size=n).astype(raw)
    else:
        base_bits = bits.copy()
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    new, base = bits.view(np_dtype), base_bits.view(np_dtype)
    pipe = Pipeline.from_config(level=level)
    blob = pipe.compress(new, base=base)
    assert _same(lmgc_core.decompress(blob, base=base), new)
