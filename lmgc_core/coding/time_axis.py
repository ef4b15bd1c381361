"""A chunk that is a short series along a time axis: each step coded against the one before it.

Why: a Zarr array of checkpoints or gradient snapshots shaped ``(steps, ...)`` and chunked several
steps deep holds, in every chunk, values that barely move from one step to the next. Coding step
``t`` against step ``t - 1`` of the *same chunk* (``Pipeline.compress(step, base=previous)``, the
float prior's delta coding) keeps what each step adds, and chunks stay independent: the first step
of a chunk is coded alone, so reading one chunk decodes that chunk only.

A series chunk is one lmgc container (``docs/format.md``) whose header says::

    {"series": {"version": 0, "time_axis": 0, "steps": 4},
     "array": {"dtype": "<f4", "shape": [4, 256, 1024]},
     "parts": [{"name": "steps", "blocks": [[size, crc32], ...]}]}

and whose blocks are the steps' own lmgc streams, in time order; step ``t > 0``'s stream records
the SHA-256 of its base, so a step decoded against anything but the step before it is refused.
Decoding needs no option: the header says everything. A chunk of one step along the axis is an
ordinary stream.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from lmgc_core.coding.declared import declared_array
from lmgc_core.stream import container
from lmgc_core.util.dtypes import dtype_name
from lmgc_core.util.errors import ConfigError, MismatchError, OutOfMemoryError, StreamError

SERIES_KEY = "series"
VERSION = 0
"""The series layout this module writes; another version is refused."""
MAX_STEPS = container.MAX_BLOCKS
"""A header cannot list more blocks than this, so neither more steps."""


def check_time_axis(time_axis: Any) -> int | None:
    """``time_axis`` as a codec option: ``None`` (off) or an integer (negative counts from the
    end, resolved per chunk). Raises :class:`ConfigError` otherwise."""
    if time_axis is None:
        return None
    if isinstance(time_axis, bool) or not isinstance(time_axis, int):
        raise ConfigError(f"time_axis must be an integer axis or null, not {time_axis!r}")
    return time_axis


def resolve_axis(time_axis: int, ndim: int, given: int | None = None) -> int:
    """The non-negative axis ``time_axis`` names in an array of ``ndim`` dimensions (``given``:
    the dimensions the user's array has, said in the error, where it is seen as ``ndim``)."""
    if not -ndim <= time_axis < ndim:
        shown = ndim if given is None else given
        raise ConfigError(f"time_axis {time_axis} is out of range for a {shown}-d array")
    return time_axis % ndim


def view_axis(time_axis: int | None, ndim: int, note: dict[str, Any] | None) -> int | None:
    """The axis of the *coded* array (:func:`~lmgc_core.util.dtypes.coding_view`'s) that is
    ``time_axis`` of the ``ndim``-d array the user gave: a Fortran-ordered array is coded as its
    transpose; a trailing axis a view adds (complex as float pairs) comes after every other.
    ``None`` when there is no series to code: no axis, or steps that would be single values."""
    if time_axis is None:
        return None
    axis = resolve_axis(time_axis, max(ndim, 1), ndim)  # refused on 0-d and 1-d chunks too
    if ndim < 2:
        return None
    if note and note.get("order") == "F":
        axis = ndim - 1 - axis
    return axis


def is_series(header: dict[str, Any]) -> bool:
    return SERIES_KEY in header


def _step(arr: np.ndarray, axis: int, t: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(arr, t, axis=axis))


def encode(pipeline: Any, arr: np.ndarray, axis: int, jobs: int = 1) -> bytes:
    """``arr`` (C-contiguous, as the codecs hand it over) as a series along ``axis``: step 0
    alone, step ``t`` against step ``t - 1``. One step or none: an ordinary stream. A pipeline
    that cannot code against a base (stages, a prior without delta coding) is a
    :class:`ConfigError` naming the option."""
    steps = arr.shape[axis]
    if steps <= 1 or steps > MAX_STEPS:
        return pipeline.compress(arr, jobs=jobs)
    pipeline.check_deltas("time_axis")
    blocks: list[bytes] = []
    base: np.ndarray | None = None
    for t in range(steps):
        step = _step(arr, axis, t)
        if base is None:
            blocks.append(pipeline.compress(step, jobs=jobs))
        else:
            blocks.append(pipeline.compress(step, jobs=jobs, base=base))
        base = step
    header = {
        SERIES_KEY: {"version": VERSION, "time_axis": axis, "steps": steps},
        "array": {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape)},
        "parts": [{"name": "steps", "blocks": [[len(b), zlib.crc32(b)] for b in blocks]}],
    }
    return container.pack(header, blocks, jobs)


def _layout(header: dict[str, Any]) -> tuple[int, int]:
    """``(axis, steps)`` of a series header, checked against its declared array."""
    note = header.get(SERIES_KEY)
    try:
        if not isinstance(note, dict) or note.get("version") != VERSION:
            raise ValueError(f"unknown series layout {note!r} (this lmgc reads version {VERSION})")
        axis, steps = note["time_axis"], note["steps"]
        if type(axis) is not int or type(steps) is not int:
            raise ValueError("time_axis and steps must be integers")
    except (KeyError, TypeError, ValueError) as exc:
        raise StreamError(f"series chunk: bad header: {exc}") from None
    _, shape = declared_array(header)
    if not 0 <= axis < len(shape) or shape[axis] != steps or steps < 2:
        raise StreamError(
            f"series chunk: time_axis {axis} with {steps} steps does not fit its shape {shape}"
        )
    return axis, steps


def _check_step(
    step_header: dict[str, Any], t: int, dtype: np.dtype, step_shape: tuple[int, ...],
    step_bytes: int,
) -> None:  # fmt: skip
    """Step ``t``'s stream header: coded alone (the first) or against the step before it, and
    declaring one step's dtype and shape (refused before anything is decoded or allocated)."""
    if ("base" in step_header) != (t > 0):  # so no step stream decodes in another's place
        how = "coded against a base" if t == 0 else "coded alone"
        raise MismatchError(
            f"series chunk: step {t}'s stream is {how}; the first step is coded alone and "
            "every later one against the step before it"
        )
    got_dtype, got_shape = declared_array(step_header, step_bytes)
    if got_dtype != dtype or tuple(got_shape) != tuple(step_shape):
        raise StreamError(
            f"series chunk: step {t} declares {got_dtype}{list(got_shape)}, the chunk's "
            f"steps are {dtype}{list(step_shape)}"
        )


def decode(
    decode_step: Any, blob: bytes, head: tuple[dict[str, Any], int], jobs: int = 1
) -> np.ndarray:
    """The array of a series chunk. ``decode_step(stream, base, max_nbytes, jobs)`` decodes one
    step's stream (``base`` is ``None`` for the first step) with the pipeline it records. Each
    step must declare the step's dtype and shape (refused before it is decoded otherwise)."""
    header = head[0]
    axis, steps = _layout(header)
    dtype, shape = declared_array(header)
    box = container.unpack(blob, head)
    if len(box.blocks) != steps:
        raise StreamError(f"series chunk: {len(box.blocks)} step streams for {steps} steps")
    step_shape = shape[:axis] + shape[axis + 1 :]
    step_bytes = dtype.itemsize * math.prod(step_shape)
    streams = [bytes(block) for block in box.blocks]
    for t, stream in enumerate(streams):  # every step's header before the chunk's memory
        _check_step(container.read_header(stream)[0], t, dtype, step_shape, step_bytes)
    try:
        out = np.empty(shape, dtype=dtype)
    except MemoryError:  # a header declaring a huge chunk
        raise OutOfMemoryError(
            "series chunk: the header asks for more memory than this machine has"
        ) from None
    base: np.ndarray | None = None
    for t, stream in enumerate(streams):
        step = np.asarray(decode_step(stream, base, step_bytes, jobs))
        if step.dtype != dtype or step.shape != tuple(step_shape):
            raise StreamError(f"series chunk: step {t} decodes to {step.dtype}{list(step.shape)}")
        index = (slice(None),) * axis + (t,)
        out[index] = step
        base = step
    return out
