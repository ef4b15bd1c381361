"""The array a stream's header declares, checked before anything is allocated or decoded: what
the pipeline, the codecs' time-axis chunks and the archive reader compare with what they expect
(its own module so that each of them can, without importing the pipeline)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lmgc_core.util.dtypes import parse_dtype
from lmgc_core.util.errors import ConfigError, StreamError

MAX_ARRAY_NBYTES = 1 << 56
"""No declared array is bigger (sizes past it would overflow numpy's index arithmetic)."""


def declared_array(
    header: Mapping[str, Any], max_nbytes: int | None = None
) -> tuple[np.dtype, tuple[int, ...]]:
    """The ``(dtype, shape)`` a stream's header declares, checked for sane sizes and, with
    ``max_nbytes``, refused (:class:`StreamError` naming both sizes) when bigger: what callers
    compare with the buffer, chunk or manifest entry they expect, before decoding anything."""
    if max_nbytes is not None and (
        isinstance(max_nbytes, bool)
        or not isinstance(max_nbytes, int | np.integer)
        or max_nbytes < 0
    ):
        raise ConfigError(f"max_nbytes must be a non-negative integer, not {max_nbytes!r}")
    try:
        dtype = parse_dtype(header["array"]["dtype"])
        shape = tuple(map(nonnegative, header["array"]["shape"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StreamError(f"header has a bad array entry: {exc}") from None
    if len(shape) > 64:
        raise StreamError(f"header declares a {len(shape)}-dimensional array")
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes > MAX_ARRAY_NBYTES:
        raise StreamError(f"header declares an implausible array of {nbytes} bytes")
    if max_nbytes is not None and nbytes > max_nbytes:
        raise StreamError(
            f"stream declares {dtype}{list(shape)} ({nbytes} bytes), more than the "
            f"{max_nbytes} bytes expected"
        )
    return dtype, shape


def nonnegative(value: Any) -> int:
    """A non-negative integer from a header (never a float, bool or string that parses)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value
