"""dtype <-> header text, and the integer/byte *views* through which non-numeric arrays are coded.

Stream headers name a coded dtype by numpy's ``dtype.str`` (``<f4``, ``>i2``) or by an ml_dtypes
name (``bfloat16``, ``float8_e4m3fn``...), which numpy itself cannot spell (it calls them ``<V2``).

Priors model numbers. An array whose items are not numbers to a prior (complex, datetime64,
fixed bytes ``|S``, unicode ``<U``, structured or opaque records) is coded through a *view* of the
same bytes as floats, integers or ``uint8`` (:func:`coding_view`), and its real dtype, shape and
memory order travel beside the stream (:func:`restore_view`), so it comes back bit for bit.
"""

from __future__ import annotations

import ast
import functools
import sys
from typing import Any

import numpy as np

from lmgc_core.util.errors import ConfigError, LMGCError, StreamError

_KINDS = "fiub"
_ML_NAMES = (
    "bfloat16",
    "float8_e3m4",
    "float8_e4m3",
    "float8_e4m3b11fnuz",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float6_e2m3fn",
    "float6_e3m2fn",
    "float4_e2m1fn",
    "int1",
    "int2",
    "int4",
    "uint1",
    "uint2",
    "uint4",
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
    return {n for n in _ML_NAMES if hasattr(ml_dtypes, n)}


def is_ml_dtype(dtype: np.dtype) -> bool:
    """bfloat16, float8_*, int4... (ml_dtypes types numpy reports as kind ``V``)."""
    dtype = np.dtype(dtype)  # kind "V", or "f" for float8_e5m2 (whose str "<f1" numpy rejects)
    if dtype.kind not in "Vf" or dtype.fields is not None or dtype.name not in _ML_NAMES:
        return False
    # Such a dtype exists only once ml_dtypes is imported: an unimported ml_dtypes (45 ms of a
    # CLI call's start-up) answers "no" without importing it.
    return "ml_dtypes" in sys.modules and dtype.name in _ml_dtype_names()


def refuse_masked(array: Any) -> None:
    """A ConfigError for a numpy masked array with masked values: lmgc codes values, and the
    mask was dropped without a word (``[1.5, --, 3.0]`` came back ``[1.5, -999.0, 3.0]``)."""
    if np.ma.isMaskedArray(array) and np.ma.getmaskarray(array).any():
        raise ConfigError(
            "a masked array with masked values: lmgc codes values, not masks, so the mask would "
            "be lost; compress array.filled(...) or array.data and the mask (np.ma.getmaskarray) "
            "apart"
        )


def is_codable(dtype: np.dtype) -> bool:
    """True for the dtypes a pipeline codes directly: bool, ints, floats, ml_dtypes and opaque
    ``|V`` items of 1, 2, 4 or 8 bytes (e.g. bfloat16 read back from a ``.npy``); other ``|V``
    sizes (``|V3``, ``|V16``) are coded as their bytes (:func:`view_dtype`): priors code items
    of an unsigned integer's size (``|V0``, no bytes, as its bytes too: an empty view)."""
    dtype = np.dtype(dtype)
    if dtype.kind in _KINDS:
        return dtype.itemsize <= 8  # not long double: 80 bits of 16 bytes, no prior's format
    return (
        dtype.kind == "V"
        and dtype.fields is None
        and dtype.subdtype is None
        and dtype.itemsize in (1, 2, 4, 8)
    )


def dtype_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if is_ml_dtype(dtype):
        _native_ml(dtype, ConfigError)
        return dtype.name
    if is_codable(dtype):
        return dtype.str  # opaque items (e.g. bfloat16 saved to .npy reads back as |V2)
    raise ConfigError(
        f"cannot compress arrays of dtype {dtype} directly (numbers only: floats, bfloat16, "
        "ints, bool); the CLI and the numcodecs/Zarr codecs code other fixed-size dtypes "
        "through an integer view"
    )


def user_dtype(text: Any, what: str = "dtype") -> np.dtype:
    """A dtype a user names (``--dtype``, a codec's ``dtype``): numpy's names (``float32``,
    ``<i2``, ``S8``) or an ml_dtypes type streams can record (``bfloat16``), which needs no
    import of ml_dtypes first. ``what``: how the message names the option."""
    if text in _ML_NAMES:
        try:
            return parse_dtype(text)
        except StreamError:
            pass  # this ml_dtypes has no such type: numpy's answer below
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        raise ConfigError(f"unknown {what} {text!r} (e.g. float32, int16, bfloat16)") from None
    if dt.hasobject:
        raise ConfigError(f"{what} {text!r} holds Python objects; give a fixed-size dtype")
    try:
        encode_dtype(dt)
    except TypeError:  # complex32 once ml_dtypes is imported: no stream header can name it
        raise ConfigError(f"{what} {text!r}: no stream can record this dtype") from None
    return dt


def parse_dtype(name: str) -> np.dtype:
    """The dtype a header names (``StreamError`` for any other text)."""
    if not isinstance(name, str):
        raise StreamError(f"bad dtype in header: {name!r}")
    return _parse_dtype(str(name))


@functools.lru_cache(maxsize=256)
def _parse_dtype(name: str) -> np.dtype:
    """:func:`parse_dtype` of a string, remembered (a decode reads every part's dtype and the
    array's: ~1 us each, a few % of a small tensor's decode). Only answers are kept, never an
    error; a dtype is immutable (none of these has fields whose names could be set)."""
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


# -- any fixed-size dtype as JSON ----------------------------------------------------------------


def _native_ml(dtype: np.dtype, error: type[Exception]) -> None:
    """Refuse a byte-swapped ml_dtypes type (``bfloat16.newbyteorder()``, ``>V2``): streams
    name these types without a byte order, so its bytes came back as native bfloat16, other
    values, with no error."""
    if dtype.itemsize > 1 and not dtype.isnative:
        raise error(
            f"a byte-swapped {dtype.name} array ({dtype.str}) cannot be coded: streams hold "
            f"{dtype.name} in native byte order; convert it first with "
            f"arr.astype(ml_dtypes.{dtype.name}) (the same values)"
        )


def encode_dtype(dtype: np.dtype) -> Any:
    """JSON for any fixed-size dtype: an ml_dtypes name, ``dtype.str``, or (records, subarrays)
    numpy's ``.npy`` descr as text."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(f"dtype {dtype} holds Python objects, which have no fixed bytes")
    if is_ml_dtype(dtype):
        _native_ml(dtype, TypeError)
        return dtype.name
    text = dtype.str if dtype.fields is None and dtype.subdtype is None else None
    try:
        text = text or repr(np.lib.format.dtype_to_descr(dtype))
    except ValueError:  # numpy's own words ("dtype.descr is not defined ...") name no way out
        raise TypeError(
            f"a record dtype whose fields overlap or are out of order ({dtype}) has no .npy "
            f"description to record: reorder its fields, or code arr.view('V{dtype.itemsize}') "
            "(its bytes)"
        ) from None
    try:  # a dtype whose text does not name it again (ml_dtypes' complex32: '<W4') would make
        back = decode_dtype(text)  # a stream that no decoder reads
    except StreamError:
        back = None
    if back != dtype:
        raise TypeError(f"dtype {dtype} ({text}) cannot be recorded in a stream header")
    return text


def decode_dtype(text: Any) -> np.dtype:
    """Inverse of :func:`encode_dtype`; raises :class:`StreamError` on anything else."""
    if not isinstance(text, str):
        raise StreamError(f"bad dtype in header: {text!r}")
    try:
        if text.startswith("["):
            dtype = np.lib.format.descr_to_dtype(ast.literal_eval(text))
        elif text[:1] in "<>|=":
            dtype = np.dtype(text)
        else:
            return parse_dtype(text)
    except LMGCError:  # "needs ml_dtypes" stays what it is, not "bad dtype" (a corrupted file)
        raise
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise StreamError(f"bad dtype in header: {text!r}") from None
    if dtype.hasobject:
        raise StreamError(f"bad dtype in header: {text!r}")
    return dtype


# -- coding views --------------------------------------------------------------------------------


def view_dtype(dtype: np.dtype) -> tuple[np.dtype, int]:
    """The dtype a prior codes ``dtype``'s items as, and how many of them make one item."""
    dtype = np.dtype(dtype)
    if is_codable(dtype):
        return dtype, 1
    big = dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian)
    order = ">" if big else "<"
    if dtype.kind == "c" and dtype.fields is None:
        half = dtype.itemsize // 2
        if half in (4, 8):
            return np.dtype(f"{order}f{half}"), 2
    if dtype.kind in "mM":
        return np.dtype(f"{order}i8"), 1
    if dtype.kind == "U" and dtype.itemsize:
        return np.dtype(f"{order}u4"), dtype.itemsize // 4
    return np.dtype(np.uint8), dtype.itemsize


def coding_view(arr: np.ndarray) -> tuple[np.ndarray, dict[str, Any] | None]:
    """``arr`` as a C-contiguous array a pipeline can code, and the note :func:`restore_view`
    needs (``None`` when ``arr`` is coded as it is).

    Fortran-ordered arrays are coded in their own memory order (as their transpose), so the
    bytes numcodecs expects back come back; object arrays raise ``TypeError``."""
    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise TypeError("lmgc cannot code object arrays (their items are Python objects)")
    note: dict[str, Any] = {}
    if arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous:
        arr = arr.T
        note["order"] = "F"
    arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d
    coded, per_item = view_dtype(arr.dtype)
    if coded != arr.dtype:
        note["dtype"] = encode_dtype(arr.dtype)
        shape = arr.shape + ((per_item,) if per_item != 1 else ())
        if arr.dtype.itemsize == 0:  # e.g. |S0: no bytes at all
            arr = np.zeros(shape, dtype=coded)
        else:
            arr = arr.reshape(-1).view(coded).reshape(shape)
    return arr, note or None


def restore_view(arr: np.ndarray, note: Any) -> np.ndarray:
    """Inverse of :func:`coding_view` on the decoded array."""
    if note is None:
        return arr
    if not isinstance(note, dict):
        raise StreamError(f"bad view note in header: {note!r}")
    try:
        if "dtype" in note:
            dtype = decode_dtype(note["dtype"])
            coded, per_item = view_dtype(dtype)
            shape = arr.shape[:-1] if per_item != 1 else arr.shape
            if arr.dtype != coded or (per_item != 1 and arr.shape[-1:] != (per_item,)):
                raise StreamError(f"decoded {arr.dtype} data does not fit the recorded {dtype}")
            if dtype.itemsize == 0:  # np.zeros makes |S0 items |S1 and allocates a byte each
                arr = np.ndarray(shape, dtype=dtype)  # (2 GiB for a declared [2**31, 0])
            else:
                arr = np.ascontiguousarray(arr).reshape(-1).view(dtype).reshape(shape)
        if note.get("order") == "F":
            arr = arr.T
    except (ValueError, TypeError, IndexError) as exc:
        raise StreamError(f"decoded data does not fit its recorded dtype: {exc}") from None
    return arr
