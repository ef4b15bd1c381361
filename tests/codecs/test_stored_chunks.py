"""A Zarr chunk or numcodecs buffer whose stream's every part is stored decodes by copying,
without building the prior its header records (as ``lmgc_core.decompress`` and ``lmgc
decompress`` do): a store written with a language model that expanded its chunks reads back
where the model is not installed."""

from __future__ import annotations

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
numcodecs = pytest.importorskip("numcodecs")

from lmgc_basic_priors.uniform import UniformPrior  # noqa: E402

from lmgc_core.codecs import numcodecs_codec  # noqa: E402
from lmgc_core.codecs.numcodecs_codec import LMGC  # noqa: E402
from lmgc_core.codecs.zarr_codec import LMGCZarrCodec  # noqa: E402
from lmgc_core.coding import pipeline  # noqa: E402
from lmgc_core.stream import container  # noqa: E402
from lmgc_core.util.errors import PluginError  # noqa: E402


def _unbuildable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``uniform`` prior cannot be built any more (as a model that is not installed), and no
    pipeline built before is cached."""

    def missing(self, *args, **kwargs):
        raise PluginError("the prior is not installed here")

    monkeypatch.setattr(numcodecs_codec, "_CACHE", {})
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    monkeypatch.setattr(UniformPrior, "__init__", missing)


def test_stored_zarr_chunks_read_back_where_their_prior_cannot_be_built(
    grads, tmp_path, monkeypatch
):
    data = grads[:512].reshape(4, 128).astype(np.float32)  # uniform expands them: stored
    path = str(tmp_path / "a.zarr")
    z = zarr.create_array(path, shape=data.shape, chunks=(2, 128), dtype="float32",
                          serializer=LMGCZarrCodec(prior="uniform"), compressors=None)  # fmt: skip
    z[:] = data
    _unbuildable(monkeypatch)
    assert zarr.open_array(path, mode="r")[:].tobytes() == data.tobytes()


def test_a_stored_numcodecs_buffer_decodes_where_its_prior_cannot_be_built(grads, monkeypatch):
    data = grads[:256].astype(np.float32)
    codec = LMGC(prior="uniform")
    blob = codec.encode(data)
    assert pipeline.stored_only(container.read_header(blob)[0])
    _unbuildable(monkeypatch)
    back = np.frombuffer(LMGC(prior="uniform").decode(blob), dtype=np.float32)
    assert back.tobytes() == data.tobytes()


def test_a_coded_chunk_still_needs_its_prior(monkeypatch):
    """Only stored-only streams skip the prior: zeros, which it codes, still need it."""
    data = np.zeros(4096, dtype=np.float32)
    blob = LMGC(prior="adaptive").encode(data)
    assert not pipeline.stored_only(container.read_header(blob)[0])
    from lmgc_basic_priors.adaptive import AdaptivePrior

    def missing(self, *args, **kwargs):
        raise PluginError("the prior is not installed here")

    monkeypatch.setattr(numcodecs_codec, "_CACHE", {})
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    monkeypatch.setattr(AdaptivePrior, "__init__", missing)
    with pytest.raises(PluginError, match="not installed"):
        LMGC(prior="adaptive").decode(blob)
