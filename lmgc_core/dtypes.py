"""dtype <-> header string, including ml_dtypes' bfloat16 (numpy calls it an opaque ``<V2``)."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, StreamError

_KINDS = "fiub"


def dtype_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.name in _ml_dtype_names() and dtype.kind in "fV":
        return dtype.name  # ml_dtypes' floats: float8 reports kind 'f' but numpy cannot name it
    if dtype.kind in _KINDS:
        return dtype.str
    if dtype.kind == "V" and dtype.name in _ml_dtype_names():
        return dtype.name
    if dtype.kind == "V" and dtype.fields is None and dtype.subdtype is None:
        return dtype.str  # opaque items (e.g. bfloat16 saved to .npy reads back as |V2)
    raise ConfigError(
        f"cannot compress arrays of dtype {dtype} (numbers only: float16/32/64, bfloat16, ints)"
    )


def is_float(dtype: np.dtype) -> bool:
    """True for IEEE-style floating dtypes, ml_dtypes' bfloat16 and float8 included."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def _ml_dtype_names() -> set[str]:
    try:
        import ml_dtypes
    except ImportError:
        return set()
    return {n for n in ("bfloat16", "float8_e4m3fn", "float8_e5m2") if hasattr(ml_dtypes, n)}


def parse_dtype(name: str) -> np.dtype:
    if not isinstance(name, str):
        raise StreamError(f"bad dtype in header: {name!r}")
    if name[:1] in "<>|=":
        try:
            dtype = np.dtype(name)
        except TypeError:
            raise StreamError(f"bad dtype in header: {name!r}") from None
        if dtype.kind not in _KINDS and not (dtype.kind == "V" and dtype.fields is None):
            raise StreamError(f"bad dtype in header: {name!r}")
        return dtype
    try:
        import ml_dtypes
    except ImportError:
        raise ConfigError(f"dtype {name} needs ml_dtypes: pip install ml-dtypes") from None
    if name not in _ml_dtype_names():
        raise StreamError(f"bad dtype in header: {name!r}")
    return np.dtype(getattr(ml_dtypes, name))
