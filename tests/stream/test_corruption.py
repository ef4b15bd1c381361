"""Corruption fuzzing: every mutated stream decodes to the exact original or raises LMGCError."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc_core import (
    ChecksumError,
    LMGCError,
    MismatchError,
    Pipeline,
    StreamError,
    TruncatedStreamError,
    decompress,
    read_header,
)
from tests.conftest import same_bits

N_MUTATIONS = 1200


# many small blocks, so that mutations land in headers, block tables and many payloads: the
# array-coded float prior cut every 64 values, and a step-coded prior (adaptive over hex symbols)
# with 4 windows of 64 tokens a block
MANY_BLOCKS = {
    "float": ({"prior": {"name": "float", "block_values": 64}}, 10),
    "adaptive-hex": ({"prior": "adaptive", "serializer": "hex", "window": 64, "batch": 4}, 22),
}


@pytest.fixture(scope="module", params=sorted(MANY_BLOCKS))
def stream(grads, request):
    config, n_blocks = MANY_BLOCKS[request.param]
    data = grads[:600]
    blob = Pipeline.from_config(config).compress(data)
    assert [len(part["blocks"]) for part in read_header(blob)["parts"]] == [n_blocks]
    assert same_bits(decompress(blob), data)
    return data, blob


def _mutate(blob: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(blob)
    kind = rng.integers(6)
    if kind == 0:  # flip one bit
        i = int(rng.integers(len(b)))
        b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # overwrite a byte
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif kind == 2:  # truncate
        b = b[: int(rng.integers(len(b)))]
    elif kind == 3:  # extend
        b += bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
    elif kind == 4:  # several random flips
        for _ in range(int(rng.integers(2, 10))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
    else:  # swap two bytes inside the payload
        i, j = rng.integers(len(b) // 2, len(b), 2)
        b[i], b[j] = b[j], b[i]
    return bytes(b)


def test_fuzzed_streams_never_return_wrong_data(stream):
    data, blob = stream
    rng = np.random.default_rng(2024)
    errors = unchanged = 0
    for i in range(N_MUTATIONS):
        bad = _mutate(blob, rng)
        try:
            out = decompress(bad)
        except LMGCError:
            errors += 1
            continue
        assert same_bits(out, data), f"mutation {i}: a corrupted stream decoded to wrong data"
        # header and every block carry a CRC32 and the stream must end after its last block:
        # only a mutation that changed nothing (a byte overwritten with itself, two equal
        # bytes swapped) may decode at all
        assert bad == blob, f"mutation {i}: a changed stream decoded without an error"
        unchanged += 1
    assert errors > N_MUTATIONS * 0.95  # the mutations really mutate


def test_truncation_and_trailing_bytes_are_named(stream):
    _, blob = stream
    with pytest.raises(TruncatedStreamError):
        decompress(blob[:-1])
    with pytest.raises(TruncatedStreamError):
        decompress(blob[:7])
    with pytest.raises(StreamError, match="trailing"):
        decompress(blob + b"\0")
    with pytest.raises(StreamError, match="magic"):
        decompress(b"not a stream at all")
    with pytest.raises(StreamError):
        decompress(b"")


@pytest.mark.parametrize("what", ["LMGC text", 12, None, [1, 2]])
def test_a_stream_that_is_not_bytes_is_named(what):
    """memoryview's own TypeError ("a bytes-like object is required") named no stream."""
    with pytest.raises(TypeError, match=f"an lmgc stream is bytes .*not a {type(what).__name__}"):
        decompress(what)


def test_a_stream_in_any_buffer_decodes_from_its_bytes(grads):
    """The same bytes as signed bytes, 32-bit items or a 2-D array were read by items or rows:
    an intact stream was called corrupted (bad magic, header checksum, a block's values).
    They are its bytes; a strided view is refused in words (Python's own BufferError)."""
    import array

    from lmgc_core import Pipeline

    blob = Pipeline.from_config({"level": 1}).compress(grads[:300])
    want = grads[:300].tobytes()
    for view in (
        np.frombuffer(blob, np.int8),
        memoryview(blob).cast("b"),
        np.frombuffer(blob, np.uint8).reshape(1, -1),
    ):
        assert decompress(view).tobytes() == want
    # 32-bit items: the stream's bytes, then the padding whole items need (trailing bytes)
    pad = -len(blob) % 4
    padded = blob + bytes(pad)
    for view in (memoryview(padded).cast("I"), array.array("I", padded)):
        if not pad:
            assert decompress(view).tobytes() == want
        else:
            with pytest.raises(StreamError, match=f"{pad} unexpected trailing bytes"):
                decompress(view)
    with pytest.raises(TypeError, match="contiguous"):
        decompress(np.frombuffer(blob * 2, np.uint8)[::2])


def test_payload_corruption_points_at_the_block(stream):
    _, blob = stream
    bad = bytearray(blob)
    bad[-3] ^= 0x10
    last = len(read_header(blob)["parts"][0]["blocks"]) - 1
    with pytest.raises(StreamError, match=rf"block {last}\b"):
        decompress(bytes(bad))


def test_wrong_prior_is_refused_and_force_is_caught_by_checksum(grads):
    blob = Pipeline.from_config({"prior": "adaptive"}).compress(grads[:200])
    uniform = Pipeline.from_config({"prior": "uniform"})
    with pytest.raises(MismatchError, match="prior"):
        uniform.decompress(blob)
    with pytest.raises(MismatchError, match="window"):
        Pipeline.from_config({"window": 100}).decompress(blob)
    with pytest.raises((ChecksumError, StreamError)):
        uniform.decompress(blob, force=True)


def test_version_1_streams_still_decode_and_unknown_versions_are_named(grads, monkeypatch):
    """Versions 2 and 3 only changed how the header is deflated (preset dictionary; version 3 a
    raw deflate stream): older streams decode, and each version's header costs fewer bytes."""
    from lmgc_core.stream import container

    data = grads[:300]
    new = Pipeline.from_config({}).compress(data)
    sizes = {}
    for version in (1, 2):
        with monkeypatch.context() as patch:
            patch.setattr(container, "VERSION", version)
            old = Pipeline.from_config({}).compress(data)
        assert old[4] == version and same_bits(decompress(old), data)
        sizes[version] = len(old)
    # version 4 adds LM text to the dictionary (5: a stored LM header); each header is written
    # in the shorter of 3 and the newest
    assert container.VERSION == 5 and new[4] in (3, 5) and same_bits(decompress(new), data)
    assert len(new) < sizes[2] - 40 < sizes[1] - 80  # the default header text in each dictionary
    future = new[:4] + bytes([9]) + new[5:]
    with pytest.raises(StreamError, match=r"unsupported lmgc format version 9.*1, 2, 3, 4, 5"):
        decompress(future)


@pytest.mark.parametrize("jobs", [1, 2])
def test_block_crcs_of_a_big_stream_checked_on_threads_name_the_first_bad_block(jobs):
    """Over PARALLEL_CRC_BYTES of blocks, the container computes the CRC32s on ``jobs`` threads:
    the same refusal as on one, naming the first damaged block in stream order."""
    from lmgc_core.stream import container

    rng = np.random.default_rng(3)
    data = rng.standard_normal(1_600_000).astype(np.float32)  # noise: ~5.5 MB of blocks
    pipe = Pipeline.from_config({"prior": {"name": "float", "level": 1, "block_values": 1 << 17}})
    blob = pipe.compress(data)
    box = container.unpack(blob, jobs=jobs)
    assert sum(map(len, box.blocks)) > container.PARALLEL_CRC_BYTES and len(box.blocks) > 6
    bad = bytearray(blob)
    start = len(blob) - sum(map(len, box.blocks))
    for k in (5, 2):  # a byte in the middle of blocks 5 and 2
        at = start + sum(map(len, box.blocks[:k])) + len(box.blocks[k]) // 2
        bad[at] ^= 0x40
    with pytest.raises(StreamError, match=r"block 2 is corrupted \(CRC32 mismatch\)"):
        container.unpack(bytes(bad), jobs=jobs)
    with pytest.raises(LMGCError, match=r"block 2\b"):  # decoded: the fast level's own checks
        decompress(bytes(bad), jobs=jobs)
