"""The level-2 (adaptive) block decoders stop at the end of a block's bytes: a block whose values
run past them is refused (ValueError from the kernel, StreamError from the codec) within one
check interval (``CHECK`` values), and memory is touched only as far as the walk gets. A crafted
header can declare 2**28 values for a block of a few kilobytes; decoding them all cost ~1.6 GB
and seconds before the checksum failed (tests/files/test_hostile_archives.py has the CLI side).

The encoder's flush leaves exactly the bytes its decoder reads, so a block one byte short is
refused too: no slack past the end is allowed, and every round trip (these and the committed
fixtures) shows none is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest
from lmgc_float import codec, int_codec, tables
from lmgc_float.formats import FLOAT_FORMATS

from lmgc_core.util.errors import StreamError

FMT = FLOAT_FORMATS["float32"]
N = 1000
SEGS = codec.seg_array([(0, 1, N)])
SENTINEL = 0xAB
PAST_END = "past the end of its coded bytes"


def _values(grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N float32 gradients (as bits) and the same quantized to small int8 levels (as u1)."""
    g = np.ascontiguousarray(grads.ravel()[:N], dtype=np.float32)
    q = np.clip(np.round(g / np.abs(g).max() * 20), -127, 127).astype(np.int8)
    return g.view(np.uint32).copy(), q.view(np.uint8).copy()


Decode = Callable[[bytes, np.ndarray, np.ndarray], None]


def _float_decode(block: bytes, out: np.ndarray, segs: np.ndarray) -> None:
    codec.decode_float_block(block, out, segs, FMT)


@pytest.fixture(scope="module")
def blocks(grads) -> dict[str, tuple[bytes, np.ndarray, Decode, int]]:
    """Real level-2 blocks of N values: (block, values, decode, size of the head before the
    range-coded part) for the float model and both integer models (levels, repeats)."""
    bits, q = _values(grads)
    return {
        "float": (codec.encode_float_block(bits, SEGS, FMT), bits, _float_decode, 4),
        "levels": (int_codec._levels_block(q, SEGS, N), q, int_codec.decode_int_block,
                   int_codec._INT_HEAD.size),
        "repeats": (int_codec._repeats_block(q, SEGS, N), q, int_codec.decode_int_block, 1),
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["float", "levels", "repeats"])
@pytest.mark.parametrize("shape", [(1, 1 << 22), (2, 1 << 21), (1 << 11, 1 << 11)])
def test_a_block_declaring_more_values_than_its_bytes_carry_stops_early(blocks, kind, shape):
    """A real block of 1,000 values decoded as 2**22 (one row, two rows, many rows): refused
    after at most one check interval past its real values, nothing written beyond."""
    block, _, decode, _ = blocks[kind]
    out = np.full(1 << 22, SENTINEL, dtype=blocks[kind][1].dtype)
    with pytest.raises(ValueError, match=PAST_END):
        decode(block, out, codec.seg_array([(0, *shape)]))
    written = np.flatnonzero(out != SENTINEL)
    assert written.max() < N + tables.CHECK, f"walked to value {written.max()}"


@pytest.mark.parametrize("kind", ["float", "levels", "repeats"])
def test_one_byte_short_is_refused(blocks, kind):
    """The block decodes with its bytes; one byte fewer of its range-coded part (or of its raw
    bits) and it is refused: the decoder may read no byte past the end."""
    block, values, decode, head = blocks[kind]
    out = np.zeros_like(values)
    decode(block, out, SEGS)
    assert np.array_equal(out, values)
    if kind == "repeats":  # all range-coded: drop the last byte
        shorter = [block[:-1]]
    else:  # the range-coded length sits at the end of the head
        rc_len = int.from_bytes(block[head - 4 : head], "little")
        rc = block[head : head + rc_len]
        raw = block[head + rc_len :]
        prefix = block[: head - 4]
        shorter = [prefix + (rc_len - 1).to_bytes(4, "little") + rc[:-1] + raw]
        if kind == "float":  # the mantissas' low bits: a raw part to cut
            assert raw
            shorter.append(block[:-1])
    for short in shorter:
        with pytest.raises(ValueError, match=PAST_END):
            decode(short, np.zeros_like(values), SEGS)


@pytest.mark.parametrize("kind", ["float", "levels"])
def test_the_codec_reports_a_stream_error(blocks, kind):
    """Through the block codec (what the prior calls): StreamError naming the block, here the
    second of two copies of a block, declared 2**20 values."""
    block, values, _, _ = blocks[kind]
    out = np.zeros(N + (1 << 20), dtype=values.dtype)
    cuts = [[(0, 1, N)], [(N, 1, 1 << 20)]]
    fmt = FMT if kind == "float" else None
    with pytest.raises(StreamError, match=f"block 1 is damaged: .*{PAST_END}"):
        codec.decode_blocks([block, block], out, cuts, fmt, 1)
    assert np.array_equal(out[:N], values)


_PEAK = """
import numpy as np, sys
from lmgc_float import codec, int_codec
from lmgc_float.formats import FLOAT_FORMATS
rows, cols, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
segs = codec.seg_array([(0, rows, cols)])
noise = np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes()
if kind == "float":
    out = np.zeros(rows * cols, dtype=np.uint32)  # untouched pages cost nothing
    block, decode = (1024).to_bytes(4, "little") + noise, codec.decode_float_block
    args = (FLOAT_FORMATS["float32"],)
else:
    out = np.zeros(rows * cols, dtype=np.uint8)
    block, decode, args = bytes([int_codec.REPEATS]) + noise, int_codec.decode_int_block, ()
try:
    decode(block, out, segs, *args)
except ValueError:
    pass
else:
    raise SystemExit("decoded")
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


@pytest.mark.rss
@pytest.mark.parametrize(
    "rows, cols, kind",
    [(1, 1 << 27, "float"), (2, 1 << 26, "float"), (1, 1 << 28, "repeats")],
)
def test_garbage_declaring_gigabytes_costs_megabytes(rows, cols, kind):
    """2 KB of noise declaring 2**27 float32 values in one row or two (512 MB of output, and
    256 MB or 1.1 GB of per-block scratch set before the first value), or 2**28 bytes: the
    scratch is set chunk by chunk as the walk reaches it, so the peak stays near the
    interpreter's own."""
    code = textwrap.dedent(_PEAK)
    done = subprocess.run(
        [sys.executable, "-c", code, str(rows), str(cols), kind],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.split()[-1]) >> 10
    assert peak_mib < 200, f"peak RSS {peak_mib} MiB"
