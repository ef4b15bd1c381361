"""Version 4's header dictionary (language-model and ``mix`` text in front of version 3's): the
writer keeps whichever of versions 3 and 4 deflates the header shorter, so a ``mix`` or LM
header shrinks and no other header grows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmgc_core import Pipeline, decompress
from lmgc_core.stream import container
from lmgc_core.util.errors import StreamError
from tests.conftest import same_bits

EXPERTS = [{"name": "float"}, {"name": "adaptive"}]
MIXTURE = {"prior": {"name": "mix", "experts": EXPERTS, "fallback": False}, "window": 128}


def _text(blob: bytes) -> bytes:
    header = container.read_header(blob)[0]
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode()


def _header_bytes(blob: bytes) -> int:
    return container.read_header(blob)[1]


def test_a_mix_header_is_written_as_version_4_and_shorter(grads):
    data = grads[:64]
    blob = Pipeline.from_config(MIXTURE).compress(data)
    text = _text(blob)
    v3, v4 = (len(container.deflate_header(text, v)) for v in (3, container.VERSION))
    assert blob[4] == container.VERSION and _header_bytes(blob) == 13 + v4
    assert v4 < v3 - 60  # the experts' fingerprints are in the dictionary
    assert same_bits(decompress(blob), data)


@pytest.mark.parametrize(
    "config", [{}, {"level": 2}, {"prior": {"name": "adaptive"}}], ids=["float", "l2", "adaptive"]
)
def test_no_header_grows(grads, config):
    """Every header is written in the shorter of the two versions (the older on a tie): never
    longer than version 3 wrote it, and in version 3's very bytes when version 4 saves nothing."""
    data = grads[:512]
    blob = Pipeline.from_config(config).compress(data)
    text = _text(blob)
    new = container.VERSION
    heads = {v: container.deflate_header(text, v) for v in (3, new)}
    version = new if len(heads[new]) < len(heads[3]) else 3
    assert blob[4] == version and blob[9 : 9 + len(heads[version])] == heads[version]
    assert _header_bytes(blob) - 13 <= len(heads[3])
    assert same_bits(decompress(blob), data)


def test_a_version_3_reader_refuses_version_4_by_its_version_byte(grads, monkeypatch):
    blob = Pipeline.from_config(MIXTURE).compress(grads[:64])
    assert blob[4] == container.VERSION
    monkeypatch.delitem(container.HEADER_DICTIONARIES, container.VERSION)
    with pytest.raises(StreamError, match=f"unsupported lmgc format version {container.VERSION}"):
        decompress(blob)


def test_a_long_header_is_deflated_once_with_the_newest_dictionary():
    text = json.dumps({"pipeline": {}, "x": list(range(20000))}).encode()
    assert len(text) > container.SMALL_HEADER
    version, head = container._smallest_header(text)
    assert version == container.VERSION and head == container.deflate_header(text, version)
    assert np.frombuffer(head, np.uint8).size > 0
