"""How the float prior sees an array: which bit fields each value has, and which 2-D segments
(rows x columns) the tensor structure gives its context models.

Only the *modelling* depends on these choices: every bit of every value is coded, so a dtype or
shape the model does not understand still round-trips exactly, it just compresses less.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lmgc_core.stream.container import MAX_BLOCKS
from lmgc_core.util.caches import drop_oldest
from lmgc_core.util.errors import ConfigError


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-754-style binary float: sign, ``exponent_bits``, ``mantissa_bits``."""

    name: str
    exponent_bits: int
    mantissa_bits: int

    @property
    def width(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def uint(self) -> np.dtype:
        return np.dtype(f"u{self.width // 8}")


FLOAT_FORMATS = {
    "float16": FloatFormat("float16", 5, 10),
    "bfloat16": FloatFormat("bfloat16", 8, 7),
    "float32": FloatFormat("float32", 8, 23),
    "float64": FloatFormat("float64", 11, 52),
    "float8_e4m3fn": FloatFormat("float8_e4m3fn", 4, 3),
    "float8_e5m2": FloatFormat("float8_e5m2", 5, 2),
}


@functools.cache
def float_format(dtype: np.dtype) -> FloatFormat | None:
    """The bit layout of ``dtype``'s values, or ``None`` when the float model does not apply.
    Remembered per dtype: numpy's ``dtype.name`` costs ~4 us, a few % of a small tensor's decode.

    An opaque 2-byte item (``|V2``: numpy's reading of a bfloat16 ``.npy``) is modelled as
    bfloat16, the only common 2-byte float numpy cannot name."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.name in FLOAT_FORMATS:
        return FLOAT_FORMATS[dtype.name]
    if dtype.kind == "V" and dtype.fields is None:
        if dtype.name in FLOAT_FORMATS:
            return FLOAT_FORMATS[dtype.name]
        if dtype.itemsize == 2:
            return FLOAT_FORMATS["bfloat16"]
    return None


def as_uint(data: np.ndarray) -> np.ndarray:
    """The values' bits as native unsigned integers of the same width (a view when possible:
    a misaligned buffer, e.g. one unpickled by a Dask worker, is copied for the kernels)."""
    data = np.require(data, requirements="CA").reshape(-1)
    if data.dtype.kind in "fiub" and not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    uint = uint_dtype(data.dtype.itemsize)
    if data.ctypes.data % uint.alignment:  # opaque items (|V2: a bfloat16 .npy) count as
        data = data.copy()  # aligned at any address, so require() left them where they were
    return data.view(uint)


@functools.cache
def uint_dtype(itemsize: int) -> np.dtype:
    """The native unsigned integer dtype of ``itemsize`` bytes (``np.dtype(f"u{n}")`` parses its
    text each time: ~0.4 us of a small tensor's decode)."""
    return np.dtype(f"u{itemsize}")


def from_uint(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`as_uint` (returns ``dtype`` itself, byte order included)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fiub" and not dtype.isnative:
        return bits.view(dtype.newbyteorder("=")).astype(dtype)
    return bits.view(dtype)


def check_layout(layout: object) -> tuple[tuple[int, ...], ...] | None:
    """Validate the ``layout`` option: a list of parameter shapes (lists of positive ints)."""
    if layout is None:
        return None
    if not isinstance(layout, list | tuple) or not layout:
        raise ConfigError(f"layout must be a non-empty list of shapes, not {layout!r}")
    if all(type(s) in (list, tuple) for s in layout):  # the usual case, checked at C speed
        fast = tuple(map(tuple, layout))  # a model's 1,220 shapes: ~0.1 ms a decode, not 0.3
        flat = [n for shape in fast for n in shape]
        if set(map(type, flat)) <= {int} and min(flat, default=0) >= 0:
            return fast
    shapes = []
    for shape in layout:
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = [shape]
        if not isinstance(shape, list | tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise ConfigError(f"layout entries must be shapes (lists of ints), not {shape!r}")
        shapes.append(tuple(shape))
    return tuple(shapes)


def tensor_shapes(
    shape: Sequence[int], layout: tuple[tuple[int, ...], ...] | None
) -> tuple[Iterable[tuple[int, ...]], bool]:
    """The tensors, in storage order, that a part of ``shape`` holds; and whether ``layout`` was
    used. A flat parameter vector (a concatenated state_dict) whose last axis, or whole size,
    equals the layout's total is split into the layout's shapes, once per leading index (one
    snapshot per row); otherwise the part is one tensor of its own shape."""
    size = math.prod(shape)
    if layout:
        total = sum(math.prod(s) for s in layout)
        if total > 0 and size % total == 0 and (size == total or (shape and shape[-1] == total)):
            # lazily: a header may declare a billion one-value tensors (see MAX_SEGMENTS)
            return itertools.chain.from_iterable(itertools.repeat(layout, size // total)), True
    return [tuple(shape)], False


def _brief(layout: object) -> str:
    text = repr(None if layout is None else [list(s) for s in layout])  # type: ignore[attr-defined]
    return text if len(text) <= 60 else text[:57] + "..."


def matrix_view(shape: Sequence[int]) -> tuple[int, int]:
    """``(rows, columns)`` for a tensor: the first axis against the rest (a Linear weight's
    ``(out, in)``, a conv weight's ``out`` against ``in x kh x kw``). 0-d and 1-D tensors are a
    single row."""
    size = math.prod(shape)
    if len(shape) < 2 or size == 0:
        return (1 if size else 0), size
    return int(shape[0]), size // int(shape[0])


MAX_SEGMENTS = 1 << 20
"""Most segments a part is cut into (~130 MB of Python tuples, ~2 s), counted before any is
listed: without it a header could declare 2**30 one-value tensors or blocks of one value. Real
layouts give a segment per tensor and snapshot row (150 tensors x 5,000 snapshots = 750 k) or
per ``block_values`` values."""


def _n_pieces(shape: Sequence[int], block_values: int) -> int:
    """How many segments :func:`segments` cuts one tensor into (by arithmetic)."""
    rows, cols = matrix_view(shape)
    if rows == 1 and cols > block_values:
        return -(-cols // block_values)
    return -(-rows // max(1, block_values // max(cols, 1)))


CACHED_SEGMENTS = 1 << 16
"""Cuts of at most this many segments are kept (~10 MB of tuples at most per entry) ..."""
CACHED_CUTS = 16
"""... for the last this many (shape, layout, block_values): a model's 1,220-tensor layout takes
~0.7 ms to cut, a tenth of its decode, on every call (each Zarr chunk, each benchmark repeat)."""
_CUTS: dict[tuple[object, ...], tuple[list[list[tuple[int, int, int]]], bool]] = {}


def segments(
    shape: Sequence[int],
    layout: tuple[tuple[int, ...], ...] | None,
    block_values: int,
) -> tuple[list[list[tuple[int, int, int]]], bool]:
    """:func:`cut_segments`, remembered for recent arguments: the lists are shared between
    callers, which only read them."""
    key = (tuple(shape), layout, block_values)
    try:
        hit = _CUTS.get(key)
    except TypeError:  # an unhashable layout (lists): not a checked one, cut it afresh
        return cut_segments(shape, layout, block_values)
    if hit is not None:
        return hit
    cut = cut_segments(shape, layout, block_values)
    if sum(map(len, cut[0])) <= CACHED_SEGMENTS:
        drop_oldest(_CUTS, CACHED_CUTS)
        _CUTS[key] = cut
    return cut


def cut_segments(
    shape: Sequence[int],
    layout: tuple[tuple[int, ...], ...] | None,
    block_values: int,
) -> tuple[list[list[tuple[int, int, int]]], bool]:
    """Cut a part into independently coded blocks of ``(offset, rows, cols)`` segments.

    A segment is whole rows of one tensor (a 1-D tensor is cut into runs of at most
    ``block_values``); consecutive segments are grouped into a block until it holds at least
    ``block_values`` values, so small tensors share one block and its learnt statistics while big
    ones give blocks that code in parallel. Derived from the shape alone: never stored."""
    tensors, used = tensor_shapes(shape, layout)
    if used and layout:  # counted before any is listed: a header may declare 2**40 of them
        copies = math.prod(shape) // sum(math.prod(s) for s in layout)
        n_segments = copies * sum(_n_pieces(s, block_values) for s in layout)
    else:
        n_segments = _n_pieces(shape, block_values)
    if n_segments > MAX_SEGMENTS:
        raise ConfigError(
            f"float prior: {math.prod(shape)} values (layout {_brief(layout)}, block_values "
            f"{block_values}) make {n_segments} segments, over {MAX_SEGMENTS}: raise "
            "block_values or code fewer snapshots per stream"
        )
    blocks: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    filled = offset = 0
    for tshape in tensors:
        rows, cols = matrix_view(tshape)
        if rows == 1 and cols > block_values:  # lazily: a header may declare 2**40 values
            pieces: Iterable[tuple[int, int]] = (
                (1, min(block_values, cols - s)) for s in range(0, cols, block_values)
            )
        else:
            per = max(1, block_values // max(cols, 1))
            pieces = ((min(per, rows - r), cols) for r in range(0, rows, per))
        for prow, pcol in pieces:
            n = prow * pcol
            if n == 0:
                continue
            current.append((offset, prow, pcol))
            filled += n
            offset += n
            if filled >= block_values:
                blocks.append(current)
                current, filled = [], 0
                if len(blocks) > MAX_BLOCKS:  # no stream header can list them
                    raise ConfigError(
                        f"float prior: {math.prod(shape)} values in blocks of {block_values} "
                        f"make over {MAX_BLOCKS} blocks; raise block_values"
                    )
    if current:
        blocks.append(current)
    return blocks, used
