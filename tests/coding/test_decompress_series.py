"""lmgc_core.decompress of a chunk the codecs wrote with ``time_axis``: the chunk describes
itself (every step records its own pipeline), so the one-shot decoder reads it as it reads any
other stream, instead of refusing it for having no pipeline of its own."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

import lmgc_core
from lmgc_core.util.errors import MismatchError, StreamError

zarr = pytest.importorskip("zarr")

from lmgc_core.codecs.numcodecs_codec import LMGC  # noqa: E402
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec  # noqa: E402
from lmgc_core.stream import container  # noqa: E402
from tests.sgd_mlp import sgd_snapshots  # noqa: E402


def snapshots(steps: int = 4) -> np.ndarray:
    """A real training series: the first layer of an MLP trained by SGD, one per 10 steps."""
    return np.stack([w1 for w1, _ in sgd_snapshots(steps, 10, 0)])[:, :16, :32]


def test_a_zarr_series_chunk_on_disk_decodes_with_the_one_shot_decoder(tmp_path: Path) -> None:
    series = snapshots()
    path = tmp_path / "series.zarr"
    z = zarr.create_array(
        path,
        shape=series.shape,
        chunks=series.shape,
        dtype="float32",
        serializer=LMGCZarrCodec(time_axis=0),
        compressors=None,
    )
    z[:] = series
    blob = (path / "c" / "0" / "0" / "0").read_bytes()
    assert "series" in lmgc_core.read_header(blob)
    for jobs in (1, 2):
        back = lmgc_core.decompress(blob, jobs=jobs)
        assert back.dtype == series.dtype and back.tobytes() == series.tobytes()


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_noted_series_chunk_comes_back_as_the_array_coded(order: str) -> None:
    w = snapshots()
    arr = np.asarray((w[:, :, :16] + 1j * w[:, :, 16:]).astype(np.complex64), order=order)
    back = lmgc_core.decompress(LMGC(time_axis=0, level=2).encode(arr))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes(order="A") == arr.tobytes(order="A")


def test_a_series_chunk_is_bounded_and_checked_like_any_stream() -> None:
    series = snapshots(3)
    blob = LMGC(time_axis=0).encode(series)
    with pytest.raises(StreamError, match="more than the 100 bytes expected"):
        lmgc_core.decompress(blob, max_nbytes=100)
    header, offset = container.read_header(blob)
    steps = container.unpack(blob, (header, offset)).blocks
    swapped = [bytes(steps[0]), bytes(steps[2]), bytes(steps[1])]
    entry = [[len(s), zlib.crc32(s)] for s in swapped]
    forged = container.pack({**header, "parts": [{"name": "steps", "blocks": entry}]}, swapped)
    with pytest.raises(MismatchError):
        lmgc_core.decompress(forged)
