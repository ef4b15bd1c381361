"""``lmgc decompress`` of a stream whose every part is stored copies the bytes without building
the prior its header records, as ``lmgc_core.decompress`` does: a language model's stored stream
comes back where the model is not installed (or llama.cpp reports other CPU features), in the
compact form of a single ``.npy`` and in a zip archive alike."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from lmgc_basic_priors.uniform import UniformPrior

from lmgc_core.cli.commands import cli
from lmgc_core.coding import pipeline
from lmgc_core.stream import container
from lmgc_core.util.errors import PluginError


def _unbuildable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``uniform`` prior cannot be built here any more (as a model that is not installed)."""

    def missing(self, *args, **kwargs):
        raise PluginError("the prior is not installed here")

    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    monkeypatch.setattr(UniformPrior, "__init__", missing)


def _compress(src, packed) -> None:
    made = CliRunner().invoke(cli, ["compress", str(src), "-o", str(packed), "--prior", "uniform",
                                    "-q"])  # fmt: skip
    assert made.exit_code == 0, made.output


@pytest.mark.parametrize("model", [False, True], ids=["recorded", "a --model that is no model"])
def test_a_stored_npy_decompresses_where_its_prior_cannot_be_built(
    grads, tmp_path, monkeypatch, model
):
    src, packed, back = tmp_path / "g.npy", tmp_path / "g.lmgc", tmp_path / "b.npy"
    np.save(src, grads[:200])  # the uniform prior expands every part: stored
    _compress(src, packed)
    header = container.read_header(packed.read_bytes())[0]
    assert pipeline.stored_only(header) and "file" in header  # the compact form
    _unbuildable(monkeypatch)
    args = ["decompress", str(packed), "-o", str(back)] + (["--model", str(src)] if model else [])
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert back.read_bytes() == src.read_bytes()


def test_a_stored_zip_archive_decompresses_where_its_prior_cannot_be_built(
    grads, tmp_path, monkeypatch
):
    import zipfile

    src, packed, back = tmp_path / "g.npz", tmp_path / "g.lmgc", tmp_path / "b.npz"
    np.savez(src, a=grads[:200], b=np.arange(96, dtype="<u4") * np.uint32(0x9E3779B1))
    _compress(src, packed)
    with zipfile.ZipFile(packed) as z:
        members = [z.read(n) for n in z.namelist() if n.endswith(".lmgc")]
    assert len(members) == 2
    assert all(pipeline.stored_only(container.read_header(m)[0]) for m in members)
    _unbuildable(monkeypatch)
    done = CliRunner().invoke(cli, ["decompress", str(packed), "-o", str(back), "--jobs", "2"])
    assert done.exit_code == 0, done.output
    assert back.read_bytes() == src.read_bytes()


def test_a_stream_with_a_coded_part_still_builds_its_prior(grads, tmp_path, monkeypatch):
    """Only stored-only streams skip the prior: a coded one still needs it (and says so)."""
    src, packed = tmp_path / "g.npy", tmp_path / "g.lmgc"
    np.save(src, np.zeros(4096, dtype="<f4"))  # zeros: the adaptive prior codes them small
    made = CliRunner().invoke(cli, ["compress", str(src), "-o", str(packed), "--prior",
                                    "adaptive", "-q"])  # fmt: skip
    assert made.exit_code == 0, made.output
    header = container.read_header(packed.read_bytes())[0]
    assert not pipeline.stored_only(header) and "prior" in header  # its fingerprint kept
    from lmgc_basic_priors.adaptive import AdaptivePrior

    def missing(self, *args, **kwargs):
        raise PluginError("the prior is not installed here")

    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})
    monkeypatch.setattr(AdaptivePrior, "__init__", missing)
    done = CliRunner().invoke(cli, ["decompress", str(packed), "-o", str(tmp_path / "b.npy")])
    assert done.exit_code != 0 and "not installed" in done.output


def test_a_stored_stream_naming_a_missing_model_decompresses(grads, tmp_path):
    """The header of a stored stream names the llamacpp prior with a model file that does not
    exist here (as on a machine without the model): nothing is built, the bytes come back."""
    src, packed, back = tmp_path / "g.npy", tmp_path / "g.lmgc", tmp_path / "b.npy"
    np.save(src, grads[:64])
    _compress(src, packed)
    blob = packed.read_bytes()
    header, offset = container.read_header(blob)
    header["pipeline"]["prior"] = {"name": "llamacpp", "model": str(tmp_path / "none.gguf")}
    packed.write_bytes(container.pack(header, [blob[offset:]]))
    done = CliRunner().invoke(cli, ["decompress", str(packed), "-o", str(back)])
    assert done.exit_code == 0, done.output
    assert back.read_bytes() == src.read_bytes()
