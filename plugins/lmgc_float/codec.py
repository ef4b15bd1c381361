"""Block coding for the float model: buffers, block framing, and parallel blocks.

A float block is ``u32 LE length of the range-coded part | range-coded part | raw bit stream``
(integer blocks: :mod:`int_codec`). Blocks are independent (fresh models), so they code and
decode on several threads: the compiled kernels (:mod:`kernels`) release the GIL.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import numpy as np

from lmgc_core.util.errors import StreamError
from lmgc_core.util.parallel import map_ordered

from . import tables
from .formats import FloatFormat
from .int_codec import decode_int_block, encode_int_block
from .kernels import float_kernels, signed

_LEN = struct.Struct("<I")
_scratch = threading.local()


def _out_buffers(rc_size: int, raw_size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's two output buffers, at least the sizes asked, kept from block to block.
    Fresh multi-megabyte buffers per block cost the operating system a page fault per 4 KiB
    they touch: about a fifth of a CLI run's time, and more with several threads."""
    rc_out = getattr(_scratch, "rc", None)
    if rc_out is None or rc_out.size < rc_size:
        rc_out = _scratch.rc = np.empty(rc_size, dtype=np.uint8)
    raw_out = getattr(_scratch, "raw", None)
    if raw_out is None or raw_out.size < raw_size:
        raw_out = _scratch.raw = np.empty(raw_size, dtype=np.uint8)
    return rc_out[:rc_size], raw_out[:raw_size]


def encode_float_block(bits: np.ndarray, segs: np.ndarray, fmt: FloatFormat) -> bytes:
    """Code the values of ``segs`` (offsets into ``bits``) as one block."""
    k = float_kernels()
    vals = signed(bits)
    n = int(segs[:, 1].astype(np.int64) @ segs[:, 2].astype(np.int64)) if len(segs) else 0
    rc_size = n * fmt.width // 8 // 2 + 64
    raw_size = (n * (fmt.mantissa_bits + 2)) // 8 + 64
    while True:
        rc_out, raw_out = _out_buffers(rc_size, raw_size)
        es = tables.encoder_state()
        bw = np.zeros(3, dtype=np.int64)
        ok = k.encode_segments(
            vals, segs, fmt.width, fmt.exponent_bits, fmt.mantissa_bits,
            es, rc_out, bw, raw_out, *tables.float_models(),
        )  # fmt: skip
        if ok:
            break
        rc_size, raw_size = rc_size * 2 + n * fmt.width // 8, raw_size * 2
    rc_len = k.encoder_finish(es, rc_out)
    raw_len = k.flush_bits(bw, raw_out)
    return b"".join((_LEN.pack(rc_len), rc_out[:rc_len], raw_out[:raw_len]))


def decode_float_block(
    block: bytes, out_bits: np.ndarray, segs: np.ndarray, fmt: FloatFormat
) -> None:
    if len(block) < _LEN.size:
        raise StreamError("float block is too short for its length field")
    (rc_len,) = _LEN.unpack_from(block)
    if rc_len > len(block) - _LEN.size:
        raise StreamError("float block's range-coded part runs past the block's end")
    buf = np.frombuffer(block, dtype=np.uint8)
    rc_in = buf[_LEN.size : _LEN.size + rc_len]
    raw_in = buf[_LEN.size + rc_len :]
    k = float_kernels()
    ds = tables.decoder_state()
    k.decoder_init(ds, rc_in)
    br = np.zeros(3, dtype=np.int64)
    k.decode_segments(
        signed(out_bits), segs, fmt.width, fmt.exponent_bits, fmt.mantissa_bits,
        ds, rc_in, br, raw_in, *tables.float_models(),
    )  # fmt: skip


def seg_array(segments: Sequence[tuple[int, int, int]]) -> np.ndarray:
    return np.asarray(segments, dtype=np.int64).reshape(-1, 3)


def encode_blocks(
    bits: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]],
    fmt: FloatFormat | None,
    jobs: int,
) -> list[bytes]:
    """Every block of ``bits`` (unsigned ints), with the float model when ``fmt`` is given and
    the integer model otherwise; blocks run on up to ``jobs`` threads."""
    if fmt is None:
        return map_ordered(lambda b: encode_int_block(bits, seg_array(b)), blocks, jobs)
    return map_ordered(lambda b: encode_float_block(bits, seg_array(b), fmt), blocks, jobs)


def decode_blocks(
    data: Sequence[bytes],
    out_bits: np.ndarray,
    blocks: Sequence[Sequence[tuple[int, int, int]]],
    fmt: FloatFormat | None,
    jobs: int,
) -> None:
    """Decode every block into ``out_bits``; a damaged block raises StreamError. The kernels
    raise ValueError for a block whose values run past the end of its bytes (they stop there: a
    header that declares 2**28 values for a block of a few kilobytes costs what those carry)."""

    def one(item: tuple[int, tuple[bytes, Sequence[tuple[int, int, int]]]]) -> None:
        index, (block, segs) = item
        try:
            if fmt is None:
                decode_int_block(block, out_bits, seg_array(segs))
            else:
                decode_float_block(block, out_bits, seg_array(segs), fmt)
        except ValueError as err:
            raise StreamError(f"float prior (level 2): block {index} is damaged: {err}") from None

    map_ordered(one, list(enumerate(zip(data, blocks, strict=True))), jobs)
