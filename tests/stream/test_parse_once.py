"""Each stream header is parsed once per decode (issue 23): verifying and inflating a header
(CRC, deflate, JSON caps, ``json.loads``) is a fixed cost per stream that small Zarr chunks and
archive members pay on every read. The count is of :func:`container.read_header` calls, every
path in lmgc reaching the header through it (or through :func:`container.read_header_keyed`,
which ``lmgc_core.decompress`` uses)."""

from __future__ import annotations

import numpy as np
import pytest

import lmgc_core
from lmgc_core.stream import container
from tests.cli_helpers import lmgc
from tests.paths import TESTS_DIR

GRADS = TESTS_DIR / "data" / "mlp_grads_8k.npy"


@pytest.fixture
def grads() -> np.ndarray:
    return np.load(GRADS)[:1024].astype(np.float32)


@pytest.fixture
def parses(monkeypatch) -> list[int]:
    """One entry (the stream's length) per header parse, from the moment it is requested."""
    calls: list[int] = []
    real, keyed = container.read_header, container.read_header_keyed

    def counting(blob: bytes) -> tuple:
        calls.append(len(blob))
        return real(blob)

    def counting_keyed(blob: bytes, names: tuple[str, ...]) -> tuple:
        calls.append(len(blob))
        return keyed(blob, names)

    monkeypatch.setattr(container, "read_header", counting)
    monkeypatch.setattr(container, "read_header_keyed", counting_keyed)
    return calls


def test_an_archive_member_is_parsed_once(tmp_path, grads, parses):
    np.savez(tmp_path / "w.npz", w=grads.reshape(32, 32))
    lmgc("compress", tmp_path / "w.npz", "-q")
    parses.clear()
    lmgc("decompress", tmp_path / "w.npz.lmgc", "-o", tmp_path / "back.npz", "-q")
    assert (tmp_path / "back.npz").read_bytes() == (tmp_path / "w.npz").read_bytes()
    assert len(parses) == 1, parses


def test_a_bare_stream_is_parsed_once(tmp_path, grads, parses):
    (tmp_path / "g.lmgc").write_bytes(lmgc_core.compress(grads))
    parses.clear()
    lmgc("decompress", tmp_path / "g.lmgc", "-o", tmp_path / "g.npy", "-q")
    assert np.load(tmp_path / "g.npy").tobytes() == grads.tobytes()
    assert len(parses) == 1, parses


def test_a_zarr_chunk_is_parsed_once(tmp_path, grads, parses):
    zarr = pytest.importorskip("zarr")
    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    z = zarr.create_array(tmp_path / "z.zarr", shape=(1024,), chunks=(256,), dtype="f4",
                          serializer=LMGCZarrCodec(), compressors=None)  # fmt: skip
    z[:] = grads
    parses.clear()
    assert zarr.open_array(tmp_path / "z.zarr")[:256].tobytes() == grads[:256].tobytes()
    assert len(parses) == 1, parses


def test_a_numcodecs_buffer_is_parsed_once(grads, parses):
    from lmgc_core.codecs.numcodecs_codec import LMGC

    codec = LMGC()
    blob = codec.encode(grads)
    parses.clear()
    assert codec.decode(blob).tobytes() == grads.tobytes()
    assert len(parses) == 1, parses


def test_a_one_shot_decompress_is_parsed_once(grads, parses):
    blob = lmgc_core.compress(grads)
    parses.clear()
    assert lmgc_core.decompress(blob).tobytes() == grads.tobytes()
    assert len(parses) == 1, parses
