"""The never-expand guarantee on the language-model path: SmolLM2 alone costs more than 4 bits
per hex digit on gradients' noise digits, so its blocks for 16 real float32 values are larger
than the values; the stream stores them raw, decodes without running (or even having) the model,
and its header leaves the model's fingerprint out (nothing of the model decodes it), so its size
does not depend on the machine: version 5's dictionary holds such a header."""

from __future__ import annotations

import json

import numpy as np
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
    assert "prior" not in header and header["pipeline"]["prior"]["name"] == "llamacpp"
    assert blob[4] == container.VERSION and offset < 13 + 100  # version 3's dictionary: ~160
    assert len(blob) == offset + data.nbytes

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran on a stored part")

    monkeypatch.setattr(LlamaCppPrior, "open", refuse)
    assert same_bits(decompress(blob), data)

    # as version 4 wrote it, with the fingerprint of another llama.cpp build: nothing of it is
    # used, so nothing to refuse
    other = json.loads(json.dumps(header))
    other["prior"] = {**LlamaCppPrior(threads=1).fingerprint(), "system_info": "CPU: AVX512"}
    assert same_bits(decompress(container.pack(other, [blob[offset:]])), data)

    # no model installed here at all
    def not_installed():
        raise PluginError("the default model is not installed")

    monkeypatch.setattr(models, "default_model_path", not_installed)
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    assert same_bits(decompress(blob), data)


def test_lmgc_decompress_of_a_stored_llamacpp_file_needs_no_model(grads, tmp_path, monkeypatch):
    """The CLI decodes a stored SmolLM2 stream (the compact form of a .npy) by copying, where
    no model is installed: the recorded prior is not built."""
    from click.testing import CliRunner

    from lmgc_core.cli.commands import cli

    src, packed, back = tmp_path / "g.npy", tmp_path / "g.lmgc", tmp_path / "b.npy"
    np.save(src, grads[:16])
    runner = CliRunner()
    made = runner.invoke(cli, ["compress", str(src), "-o", str(packed), "--prior", "llamacpp",
                               "-q"])  # fmt: skip
    assert made.exit_code == 0, made.output
    header, offset = container.read_header(packed.read_bytes())
    assert pipeline.stored_only(header) and "prior" not in header
    assert len(packed.read_bytes()) == offset + 64 <= src.stat().st_size

    def not_installed():
        raise PluginError("the default model is not installed")

    monkeypatch.setattr(models, "default_model_path", not_installed)
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    done = runner.invoke(cli, ["decompress", str(packed), "-o", str(back)])
    assert done.exit_code == 0, done.output
    assert back.read_bytes() == src.read_bytes()
