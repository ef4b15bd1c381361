"""The key ``lmgc_core.decompress`` looks its cached pipelines and stream checks up by is the
exact text of the header's ``pipeline`` and ``prior`` entries (``container.read_header_keyed``):
the header it returns is ``json.loads``' own, and a stream whose pipeline or fingerprint differs
in any way never reuses another's pipeline or check (issue 20: the fixed cost of a decode)."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest

from lmgc_core import Pipeline, decompress
from lmgc_core.coding import pipeline
from lmgc_core.stream import container
from lmgc_core.util.errors import MismatchError, StreamError

NAMES = ("pipeline", "prior")


def _stream(data: np.ndarray, **prior: Any) -> bytes:
    return Pipeline.from_config({"prior": {"name": "float", **prior}}).compress(data)


def _with_text(blob: bytes, text: bytes) -> bytes:
    """``blob``'s blocks behind a header of exactly ``text`` (checksums right)."""
    offset = container.read_header(blob)[1]
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY)
    head = packer.compress(text) + packer.flush()
    prefix = struct.pack("<4sBI", container.MAGIC, container.VERSION, len(head))
    crc = struct.pack("<I", zlib.crc32(prefix + head))
    return prefix + head + crc + bytes(blob[offset:])


def _text(blob: bytes) -> bytes:
    header = container.read_header(blob)[0]
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode()


@pytest.fixture
def data(grads) -> np.ndarray:
    return np.asarray(grads[:2048], dtype=np.float32)


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})


def test_the_key_is_the_entries_text_and_the_header_json_loads(data):
    blob = _stream(data, layout=[[32, 64]])
    (header, offset), key = container.read_header_keyed(blob, NAMES)
    assert (header, offset) == container.read_header(blob)
    entries = [json.dumps(header[n], separators=(",", ":"), sort_keys=True) for n in NAMES]
    assert key == "\n".join(f"{len(e)}:{e}" for e in entries)


def test_an_absent_entry_has_a_key_of_its_own(data):
    blob = _stream(data)
    (header, _), key = container.read_header_keyed(blob, ("prior", "no such entry"))
    assert "no such entry" not in header
    assert key is not None and key.endswith("\n0:")


def test_a_repeated_entry_keys_its_last_value_as_json_loads_keeps_it(data):
    text = _text(_stream(data))
    decoy = b'"prior":{"prior":"float","version":99},'
    at = text.rindex(b'"prior":{')  # the fingerprint (the pipeline's prior spec comes first)
    edited = text[:at] + decoy + text[at:]
    assert json.loads(edited)["prior"] == json.loads(text)["prior"]
    (header, _), key = container.read_header_keyed(_with_text(_stream(data), edited), NAMES)
    assert header == json.loads(edited)
    assert header["prior"]["version"] == 1 and "99" not in key.split("\n")[1]


@pytest.mark.parametrize(
    ("edit", "compact"),
    [
        (lambda t: t.replace(b'"parts":', b'"parts" :'), False),  # whitespace
        (lambda t: b" " + t, False),
        (lambda t: t + b"\n", False),
        (lambda t: t.replace(b'"made_by":"lmgc', b'"made_by":"\\u00e9 lmgc'), True),  # escaped
        (lambda t: t.replace(b'"made_by":"lmgc', '"made_by":"\u00e9 lmgc'.encode()), False),
    ],
)
def test_other_texts_parse_as_json_loads_and_decode(data, edit, compact):
    blob = _stream(data)
    text = edit(_text(blob))
    other = _with_text(blob, text)
    (header, _), key = container.read_header_keyed(other, NAMES)
    assert (key is not None) == compact
    assert header == json.loads(text)
    assert header == container.read_header(other)[0]
    assert decompress(other).tobytes() == data.tobytes()


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,}',
        b'{"a":1',
        b'{"a" 1}',
        b'{"a":1}{',
        b'{"a":tru}',
        b'{"a":[1,2}',
        b"[1,2]",
        b'"text"',
    ],
)
def test_bad_texts_are_refused_as_read_header_refuses_them(text, data):
    blob = _with_text(_stream(data), text)
    with pytest.raises(StreamError) as want:
        container.read_header(blob)
    with pytest.raises(StreamError) as got:
        container.read_header_keyed(blob, NAMES)
    assert str(got.value) == str(want.value)


def test_streams_of_other_pipelines_decode_one_after_another(data):
    blobs = [
        _stream(data, level=1),
        _stream(data, level=1, layout=[[32, 64]]),
        _stream(data, level=2),
        _stream(data.astype(np.float64), level=1),
        _stream(data.reshape(32, 64), level=1, layout=[[32, 64]]),
    ]
    wants = [data, data, data, data.astype(np.float64), data.reshape(32, 64)]
    for _ in range(2):
        for blob, want in zip(blobs, wants, strict=True):
            back = decompress(blob)
            assert back.dtype == want.dtype and back.shape == want.shape
            assert back.tobytes() == want.tobytes()


def test_a_changed_fingerprint_is_refused_after_the_same_pipeline_decoded(data):
    blob = _stream(data, level=1)
    assert decompress(blob).tobytes() == data.tobytes()  # its pipeline and check are kept
    text = _text(blob)
    assert text.count(b'"version":1}') == 1
    other = _with_text(blob, text.replace(b'"version":1}', b'"version":2}'))
    with pytest.raises(MismatchError):
        decompress(other)
    with pytest.raises(MismatchError):  # and again, once a key for it is known
        decompress(other)
    assert decompress(blob).tobytes() == data.tobytes()


def test_a_changed_pipeline_is_built_again(data):
    blob = _stream(data, level=1, layout=[[32, 64]])
    assert decompress(blob).tobytes() == data.tobytes()
    text = _text(blob)
    assert text.count(b'"layout":[[32,64]]') == 2
    # the pipeline's own layout changed, the fingerprint's not: the prior built from the
    # pipeline entry (not the cached one) refuses the stream
    edited = text.replace(b'"layout":[[32,64]]', b'"layout":[[64,32]]', 1)
    assert json.loads(edited)["pipeline"]["prior"]["layout"] == [[64, 32]]
    with pytest.raises(MismatchError):
        decompress(_with_text(blob, edited))


def test_header_dtypes_are_parsed_as_named_every_time():
    from lmgc_core.util.dtypes import parse_dtype

    names = ["<f4", ">f4", "<f8", "|u1", "<i2", "|V2", "bfloat16", "<f4"]
    for _ in range(2):  # the second round from what was remembered
        got = [parse_dtype(n) for n in names]
        assert [d.str for d in got] == ["<f4", ">f4", "<f8", "|u1", "<i2", "|V2", "<V2", "<f4"]
        assert got[-2].name == "bfloat16" and got[-3].name == "void16"
        for bad in ("<U4", "float33", "|O", "", 4):
            with pytest.raises(StreamError):
                parse_dtype(bad)


@pytest.fixture
def fresh_values(monkeypatch):
    monkeypatch.setattr(container, "_RECENT_VALUES", {})


def _keyed_header(blob: bytes) -> dict[str, Any]:
    return container.read_header_keyed(blob, NAMES)[0][0]


def test_a_remembered_entry_is_reused_only_for_its_exact_text(data, fresh_values):
    first = _stream(data, layout=[[32, 64]])
    longer = _stream(data, layout=[[32, 64], [0]])  # the first's layout text is its prefix
    header = _keyed_header(first)
    again = _keyed_header(first)
    assert again["pipeline"] is header["pipeline"]  # the text was seen: not parsed again
    assert again["prior"] is header["prior"]
    other = _keyed_header(longer)
    assert other == container.read_header(longer)[0]
    assert other["prior"]["layout"] == [[32, 64], [0]]
    assert _keyed_header(first) == container.read_header(first)[0]


def test_a_remembered_text_followed_by_more_is_not_taken_for_the_value(data, fresh_values):
    blob = _stream(data, layout=[[32, 64]])
    text = _text(blob)
    _keyed_header(blob)  # its pipeline's text remembered
    at = text.index(b'"pipeline":') + len(b'"pipeline":')
    stop = at + len(json.dumps(json.loads(text)["pipeline"], separators=(",", ":"), sort_keys=True))
    for extra in (b"1", b"]"):  # the remembered text, then bytes that make it no value
        edited = _with_text(blob, text[:stop] + extra + text[stop:])
        with pytest.raises(StreamError):
            container.read_header(edited)
        with pytest.raises(StreamError):
            container.read_header_keyed(edited, NAMES)
    spaced = _with_text(blob, text[:stop] + b" " + text[stop:])  # JSON, not the compact form
    (header, _), key = container.read_header_keyed(spaced, NAMES)
    assert key is None and header == container.read_header(spaced)[0]


def test_remembered_values_are_bounded(data, fresh_values):
    for n in range(container.RECENT_VALUES + 3):
        blob = _stream(data, layout=[[32, 64], [n]])
        assert _keyed_header(blob) == container.read_header(blob)[0]
    assert {len(v) for v in container._RECENT_VALUES.values()} == {container.RECENT_VALUES}
