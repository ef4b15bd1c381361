"""The never-expand guarantee on the language-model path: SmolLM2 alone costs more than 4 bits
per hex digit on gradients' noise digits, so its blocks for 16 real float32 values are larger
than the values; the stream stores them raw, decodes without running (or even having) the model,
and its header (version 4's dictionary names the model) stays small."""

from __future__ import annotations

import json

import pytest

from lmgc_core import Pipeline, decompress
from lmgc_core.coding import pipeline
from lmgc_core.lm import models
from lmgc_core.stream import container
from lmgc_core.util.errors import PluginError
from tests.conftest import same_bits
from tests.plugins.lm.test_lm_priors import needs_llama, needs_model

pytestmark = [pytest.mark.lm, needs_model, needs_llama]


def test_llamacpp_expanding_part_is_stored_and_decodes_without_the_model(grads, monkeypatch):
    from lmgc_llamacpp.prior import LlamaCppPrior

    data = grads[:16]
    blob = Pipeline.from_config({"prior": {"name": "llamacpp", "threads": 1}}).compress(data)
    header, offset = container.read_header(blob)
    (part,) = header["parts"]
    assert part["coding"] == "stored" and part["stored"]["steps"] > data.nbytes
    assert blob[4] == 4 and offset < 13 + 130  # version 3's dictionary: ~280 bytes
    assert len(blob) == offset + data.nbytes

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran on a stored part")

    monkeypatch.setattr(LlamaCppPrior, "open", refuse)
    assert same_bits(decompress(blob), data)

    # another llama.cpp build recorded: nothing of it is used, so nothing to refuse
    other = json.loads(json.dumps(header))
    other["prior"]["system_info"] = "CPU: SSE3 AVX512 OPENMP"
    assert same_bits(decompress(container.pack(other, [blob[offset:]])), data)

    # no model installed here at all
    def not_installed():
        raise PluginError("the default model is not installed")

    monkeypatch.setattr(models, "default_model_path", not_installed)
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    assert same_bits(decompress(blob), data)
