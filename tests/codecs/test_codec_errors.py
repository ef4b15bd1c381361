"""The numcodecs and Zarr codecs fail with lmgc's errors (issue 19, output hygiene).

Whatever a hostile or damaged chunk does, what escapes the codec is an ``LMGCError`` that is
also a ``ValueError`` (what numcodecs and Zarr users catch), never a bare ``RecursionError``,
``TypeError`` or ``ValueError`` from deep inside; a chunk of another size than the caller's
buffer is refused before it is decoded, naming both sizes. The documented ``TypeError`` for
object arrays stays.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest

from lmgc_core.codecs.numcodecs_codec import LMGC
from lmgc_core.stream import container
from lmgc_core.util.errors import (
    ChecksumError,
    ConfigError,
    LMGCError,
    MismatchError,
    StreamError,
    TruncatedStreamError,
)

zarr = pytest.importorskip("zarr")
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec  # noqa: E402

CHUNK = 256


def _repack(blob: bytes, edit: Any) -> bytes:
    header, offset = container.read_header(blob)
    edit(header)
    return container.pack(header, []) + blob[offset:]


def _nested_stream(depth: int = 100_000) -> bytes:
    """A stream whose (checksummed, well-deflated) header nests ``depth`` lists."""
    text = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    head = container.deflate_header(text)
    prefix = struct.pack("<4sBI", container.MAGIC, container.VERSION, len(head))
    return prefix + head + struct.pack("<I", zlib.crc32(prefix + head))


def _bad_stages_stream(codec: LMGC, values: Any = (1, 2, 3)) -> bytes:
    """A real stream whose recorded pipeline has ``stages: 1`` (a TypeError deep in the config
    code, before this fix)."""

    def edit(h: dict[str, Any]) -> None:
        h["pipeline"]["stages"] = 1

    return _repack(codec.encode(np.float32(values)), edit)


@pytest.fixture(scope="module")
def codec() -> LMGC:
    return LMGC()


@pytest.mark.parametrize(
    "cls", [StreamError, TruncatedStreamError, ChecksumError, MismatchError, ConfigError]
)
def test_input_errors_are_value_errors(cls):
    assert issubclass(cls, LMGCError) and issubclass(cls, ValueError)


def test_deeply_nested_header_is_a_stream_error(codec):
    with pytest.raises(StreamError, match="deeper than") as info:
        codec.decode(_nested_stream())
    assert not isinstance(info.value, RecursionError)


def test_failures_deep_inside_become_stream_errors(codec):
    with pytest.raises(StreamError, match="TypeError") as info:
        codec.decode(_bad_stages_stream(codec))
    assert isinstance(info.value.__cause__, TypeError)


def test_object_arrays_still_raise_type_error(codec):
    with pytest.raises(TypeError):
        codec.encode(np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(TypeError):
        codec.decode(codec.encode(np.arange(3.0)), out=np.empty(3, dtype=object))


@pytest.mark.parametrize("n_out", [5, 20])
def test_decode_into_an_out_of_another_size_names_both(codec, n_out):
    blob = codec.encode(np.arange(10, dtype=np.float32))
    with pytest.raises(StreamError, match=rf"40 bytes.*{4 * n_out} bytes"):
        codec.decode(blob, out=np.empty(n_out, np.float32))
    out = np.empty(10, np.float32)
    codec.decode(blob, out=out)
    np.testing.assert_array_equal(out, np.arange(10, dtype=np.float32))


def _store(tmp_path) -> tuple[str, np.ndarray]:
    path = str(tmp_path / "a.zarr")
    data = np.linspace(-1, 1, 4 * CHUNK, dtype=np.float32).reshape(4, CHUNK)
    arr = zarr.create_array(
        path, shape=data.shape, chunks=(1, CHUNK), dtype="float32",
        serializer=LMGCZarrCodec(), compressors=None,
    )  # fmt: skip
    arr[:] = data
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], data)
    return path, data


@pytest.mark.parametrize("case", ["nested", "stages", "smaller", "other dtype"])
def test_zarr_chunk_replaced_by_a_bad_stream(tmp_path, codec, case):
    """A real Zarr v3 store on disk with one chunk file replaced."""
    path, data = _store(tmp_path)
    blob, match = {
        "nested": (_nested_stream(), "deeper than"),
        "stages": (_bad_stages_stream(codec, data[0]), "TypeError"),
        "smaller": (codec.encode(data[0, :10]), rf"40 bytes.*{4 * CHUNK} bytes"),
        "other dtype": (codec.encode(data[0].astype(np.int32)), "int32"),
    }[case]
    (tmp_path / "a.zarr" / "c" / "1" / "0").write_bytes(blob)
    arr = zarr.open_array(path, mode="r")
    np.testing.assert_array_equal(arr[0], data[0])
    with pytest.raises(StreamError, match=match):
        arr[1]


def test_stored_metadata_the_codecs_do_not_take_is_a_config_error():
    """An unknown key (metadata of a newer lmgc) or stages that are no list raised Python's
    TypeError, and a Zarr array with such metadata did not even open for reading."""
    import numcodecs

    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    with pytest.raises(ConfigError, match="new_option"):
        numcodecs.get_codec({"id": "lmgc", "level": 1, "new_option": 1})
    configuration = {**LMGCZarrCodec(level=1).to_dict()["configuration"], "stages": "quantize"}
    with pytest.raises(ConfigError, match="stages must be a list"):
        LMGCZarrCodec.from_dict({"name": "lmgc", "configuration": configuration})


@pytest.mark.parametrize(
    ("dtype", "said"),
    [
        ("f4,i2", "record or subarray"),  # its config text does not read back: no reopening
        ([("a", "u1")], "record or subarray"),
        ("S0", "items of 0 bytes"),  # ZeroDivisionError at every raw encode
        ("V0", "items of 0 bytes"),
    ],
)
def test_a_dtype_option_a_config_cannot_hold_is_refused(dtype, said):
    import numcodecs

    with pytest.raises(ConfigError, match=said):
        LMGC(dtype=dtype)
    codec = LMGC(dtype="bfloat16")  # a plain one reads back from its config
    assert numcodecs.get_codec(codec.get_config()).get_config() == codec.get_config()


def test_a_read_only_out_is_the_callers_error(codec):
    """decode(blob, out=bytes(32)) blamed the input ("cannot decode this input")."""
    blob = codec.encode(np.arange(8, dtype=np.float32))
    with pytest.raises(ConfigError, match="out= is read-only"):
        codec.decode(blob, out=bytes(32))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_config_that_is_not_json_is_refused(value):
    """NaN and Infinity pass ``json.dumps`` by default, and zarr.json was written with a bare
    ``NaN`` in it (not JSON: other readers refuse the store's metadata)."""
    for cls in (LMGC, LMGCZarrCodec):
        with pytest.raises(ConfigError, match="JSON"):
            cls(window=value)


def test_a_time_axis_no_chunk_could_use_is_refused_before_zarr_json(tmp_path):
    """A ``time_axis`` codes each step against the one before: with a prior that cannot code
    deltas the array was created, and every write then failed."""
    import zarr

    path = tmp_path / "t.zarr"
    with pytest.raises(ConfigError, match="time_axis: prior 'adaptive' cannot code against"):
        zarr.create_array(
            str(path), shape=(4, 8), chunks=(2, 8), dtype="f4", compressors=None,
            serializer=LMGCZarrCodec(prior="adaptive", time_axis=0),
        )  # fmt: skip
    assert not (path / "zarr.json").exists()


def test_a_record_dtype_numpy_cannot_describe_says_how_to_code_it():
    """Fields out of order (or overlapping) have no ``.npy`` descr, which a noted view records:
    numpy's own words ("dtype.descr is not defined ...") came through, naming no way out."""
    dt = np.dtype({"names": ["a", "b"], "formats": ["<f4", "<i2"], "offsets": [4, 0],
                   "itemsize": 8})  # fmt: skip
    a = np.arange(8, dtype=np.uint8).repeat(4).view(dt)
    with pytest.raises(ConfigError, match=r"reorder its fields, or code arr\.view\('V8'\)"):
        LMGC().encode(a)
    assert bytes(LMGC().decode(LMGC().encode(a.view("V8")))) == a.tobytes()
