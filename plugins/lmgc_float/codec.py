"""Block coding for the float model: buffers, block framing, and parallel blocks.

A block is ``u32 LE length of the range-coded part | range-coded part | raw bit stream``. Blocks
are independent (fresh models), so they code and decode on several threads: the numba kernels
release the GIL.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from lmgc_core.errors import StreamError
from lmgc_core.parallel import map_ordered

from . import float_kernel as fk
from . import int_kernel as ik
from . import level_kernel as lk
from . import rangecoder as rc
from .formats import FloatFormat

_LEN = struct.Struct("<I")
_INT_HEAD = struct.Struct("<BQI")  # model tag, centre (two's complement), range-coded length
LEVELS, REPEATS = 1, 2


def _float_models() -> tuple:
    return (
        rc.new_bits(fk.ZERO_CONTEXTS),
        rc.new_bits(fk.SIGN_CONTEXTS),
        rc.new_model(fk.EXP_CONTEXTS, fk.EXP_SYMBOLS),
        rc.new_model(fk.MANT_CONTEXTS, 1 << fk.MANT_BITS),
    )


def _signed(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.dtype(f"i{bits.dtype.itemsize}"))


def encode_float_block(bits: np.ndarray, segs: np.ndarray, fmt: FloatFormat) -> bytes:
    """Code the values of ``segs`` (offsets into ``bits``) as one block."""
    vals = _signed(bits)
    n = int(segs[:, 1].astype(np.int64) @ segs[:, 2].astype(np.int64)) if len(segs) else 0
    rc_size = n * fmt.width // 8 // 2 + 64
    raw_size = (n * (fmt.mantissa_bits + 2)) // 8 + 64
    while True:
        rc_out = np.empty(rc_size, dtype=np.uint8)
        raw_out = np.empty(raw_size, dtype=np.uint8)
        es = rc.encoder_state()
        bw = np.zeros(3, dtype=np.int64)
        ok = fk.encode_segments(
            vals, segs, fmt.width, fmt.exponent_bits, fmt.mantissa_bits,
            es, rc_out, bw, raw_out, *_float_models(),
        )  # fmt: skip
        if ok:
            break
        rc_size, raw_size = rc_size * 2 + n * fmt.width // 8, raw_size * 2
    rc_len = rc.encoder_finish(es, rc_out)
    raw_len = rc.flush_bits(bw, raw_out)
    return b"".join((_LEN.pack(rc_len), rc_out[:rc_len].tobytes(), raw_out[:raw_len].tobytes()))


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
    ds = rc.decoder_state(rc_in)
    br = np.zeros(3, dtype=np.int64)
    fk.decode_segments(
        _signed(out_bits), segs, fmt.width, fmt.exponent_bits, fmt.mantissa_bits,
        ds, rc_in, br, raw_in, *_float_models(),
    )  # fmt: skip


def _int_models(itemsize: int) -> tuple:
    return (
        rc.new_bits(ik.MATCH_CONTEXTS),
        ik.hash_table(),
        rc.new_bits(ik.REPEAT_CONTEXTS),
        rc.new_bits(ik.tree_contexts()),
        rc.new_model(ik.contexts(itemsize), 256),
    )


def _level_models() -> tuple:
    return (
        rc.new_bits(fk.ZERO_CONTEXTS),
        rc.new_bits(fk.SIGN_CONTEXTS),
        rc.new_model(fk.EXP_CONTEXTS, fk.EXP_SYMBOLS),
        rc.new_model(lk.LENGTH_CONTEXTS, 1 << lk.TOP_BITS),
    )


def _centre(bits: np.ndarray, segs: np.ndarray) -> int:
    """The block's most common value (items of up to 2 bytes), else 0."""
    if bits.dtype.itemsize > 2 or not len(segs):
        return 0
    start = int(segs[0, 0])
    stop = int(segs[-1, 0] + segs[-1, 1] * segs[-1, 2])
    counts = np.bincount(bits[start:stop], minlength=1)
    return int(np.argmax(counts))


def _levels_block(bits: np.ndarray, segs: np.ndarray, n: int) -> bytes:
    centre = _centre(bits, segs)
    size = n * bits.dtype.itemsize // 2 + 4096
    while True:
        out = np.empty(size, dtype=np.uint8)
        raw = np.empty(size, dtype=np.uint8)
        es = rc.encoder_state()
        bw = np.zeros(3, dtype=np.int64)
        width = 8 * bits.dtype.itemsize
        if lk.encode_levels(_signed(bits), segs, width, centre, es, out, bw, raw, *_level_models()):
            break
        size = size * 2 + n * bits.dtype.itemsize
    rc_len = rc.encoder_finish(es, out)
    raw_len = rc.flush_bits(bw, raw)
    head = _INT_HEAD.pack(LEVELS, centre & 0xFFFFFFFFFFFFFFFF, rc_len)
    return head + out[:rc_len].tobytes() + raw[:raw_len].tobytes()


def _repeats_block(bits: np.ndarray, segs: np.ndarray, n: int) -> bytes:
    itemsize = bits.dtype.itemsize
    size = n * itemsize // 2 + 4096
    while True:
        out = np.empty(size, dtype=np.uint8)
        es = rc.encoder_state()
        if ik.encode_ints(_signed(bits), segs, itemsize, es, out, *_int_models(itemsize)):
            break
        size = size * 2 + n * itemsize
    return bytes([REPEATS]) + out[: rc.encoder_finish(es, out)].tobytes()


def encode_int_block(bits: np.ndarray, segs: np.ndarray) -> bytes:
    """Code the integers of ``segs`` with both integer models and keep the smaller block: the
    level model suits quantizer indices, the repeat model packed bits and other byte data."""
    n = int(segs[:, 1].astype(np.int64) @ segs[:, 2].astype(np.int64)) if len(segs) else 0
    return min(_levels_block(bits, segs, n), _repeats_block(bits, segs, n), key=len)


def decode_int_block(block: bytes, out_bits: np.ndarray, segs: np.ndarray) -> None:
    if not block:
        raise StreamError("integer block is empty")
    buf = np.frombuffer(block, dtype=np.uint8)
    if block[0] == REPEATS:
        inp = buf[1:]
        ds = rc.decoder_state(inp)
        itemsize = out_bits.dtype.itemsize
        ik.decode_ints(_signed(out_bits), segs, itemsize, ds, inp, *_int_models(itemsize))
        return
    if block[0] != LEVELS or len(block) < _INT_HEAD.size:
        raise StreamError("integer block has an unknown model tag or a short header")
    _, centre, rc_len = _INT_HEAD.unpack_from(block)
    if rc_len > len(block) - _INT_HEAD.size:
        raise StreamError("integer block's range-coded part runs past the block's end")
    rc_in = buf[_INT_HEAD.size : _INT_HEAD.size + rc_len]
    raw_in = buf[_INT_HEAD.size + rc_len :]
    ds = rc.decoder_state(rc_in)
    br = np.zeros(3, dtype=np.int64)
    width = 8 * out_bits.dtype.itemsize
    centre = np.int64(np.uint64(centre).view(np.int64))
    lk.decode_levels(_signed(out_bits), segs, width, centre, ds, rc_in, br, raw_in,
                     *_level_models())  # fmt: skip


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
    pairs = list(zip(data, blocks, strict=True))
    if fmt is None:
        map_ordered(lambda p: decode_int_block(p[0], out_bits, seg_array(p[1])), pairs, jobs)
    else:
        map_ordered(lambda p: decode_float_block(p[0], out_bits, seg_array(p[1]), fmt), pairs, jobs)
