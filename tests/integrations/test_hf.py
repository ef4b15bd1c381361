"""transformers' from_pretrained on folders written by compress_folder (lmgc compress DIR -o OUT):
the same outputs as the original folder, exactly. A tiny random Llama here, and the real
SmolLM2-135M (bf16, sharded) in the slow test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import lmgc_core.integrations.hf
from lmgc_core.files.folders import compress_folder, decompress_folder
from lmgc_core.util.errors import PluginError

INPUT = torch.tensor([[1, 5, 9, 2, 7, 3, 11, 4]])


@pytest.fixture
def hooked() -> Iterator[None]:
    lmgc_core.integrations.hf.enable()
    try:
        yield
    finally:
        lmgc_core.integrations.hf.disable()


def _tiny(tmp_path: Path, shard: str | None) -> tuple[Path, torch.Tensor]:
    """A saved random model and the logits of the folder as from_pretrained loads it (the
    in-memory model differs: its rotary buffers were cast to bf16, a loaded one's are not)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    folder = tmp_path / "tiny"
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    return folder, _logits(folder)


def _logits(folder: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(INPUT).logits


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["one-file", "sharded"])
def test_from_pretrained_reads_a_compressed_folder(
    tmp_path: Path, shard: str | None, hooked: None
) -> None:
    folder, want = _tiny(tmp_path, shard)
    names = {p.name for p in folder.iterdir()}
    assert ("model.safetensors.index.json" in names) == (shard is not None)
    compress_folder(folder, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.safetensors"))  # only archives are left
    got = _logits(tmp_path / "out")
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_a_config_naming_no_dtype_loads_from_a_compressed_folder(
    tmp_path: Path, hooked: None
) -> None:
    """Without a dtype in config.json (gpt2-style configs) transformers lays the model out from
    every tensor's ``get_slice(name).get_dtype()`` and ``.get_shape()``: a plain tensor has
    neither, and from_pretrained raised AttributeError."""
    import json

    folder, _ = _tiny(tmp_path, None)
    config = json.loads((folder / "config.json").read_text())
    for key in ("dtype", "torch_dtype"):
        config.pop(key, None)
    (folder / "config.json").write_text(json.dumps(config))
    want = _logits(folder)
    compress_folder(folder, tmp_path / "out")
    got = _logits(tmp_path / "out")
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_without_enable_the_compressed_folder_does_not_load(tmp_path: Path) -> None:
    folder, _ = _tiny(tmp_path, None)
    compress_folder(folder, tmp_path / "out")
    with pytest.raises(OSError):
        _logits(tmp_path / "out")


def test_plain_folders_load_as_before_when_enabled(tmp_path: Path, hooked: None) -> None:
    folder, want = _tiny(tmp_path, "20KB")
    assert torch.equal(_logits(folder), want)


def test_enable_names_a_missing_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(transformers.modeling_utils, "_get_resolved_checkpoint_files")
    with pytest.raises(PluginError, match="_get_resolved_checkpoint_files"):
        lmgc_core.integrations.hf.enable()
    assert not lmgc_core.integrations.hf._saved  # nothing half-patched


@pytest.mark.slow
@pytest.mark.lm
def test_real_smollm2_folder_round_trips_and_loads_exactly(tmp_path: Path, hooked: None) -> None:
    """The bundled SmolLM2-135M GGUF, dequantised to bf16 and saved as a real model folder
    (three ~100 MB safetensors shards and their index): the folder comes back byte for byte,
    and from_pretrained on the compressed folder gives the original's logits exactly."""
    from lmgc_core.lm.models import default_model_path

    gguf = default_model_path()
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    config = quantised.config
    if hasattr(config, "quantization_config"):  # a gguf-quantised model does not save
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantised.state_dict())
    del quantised
    folder = tmp_path / "smollm2"
    model.save_pretrained(folder, max_shard_size="100MB")
    assert len(list(folder.glob("model-*.safetensors"))) >= 2
    del model
    want = _logits(folder)

    result = compress_folder(folder, tmp_path / "out", jobs=0)
    assert result.written_bytes < result.source_bytes
    got = _logits(tmp_path / "out")
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    decompress_folder(tmp_path / "out", tmp_path / "back", jobs=0)
    for path in folder.iterdir():
        assert (tmp_path / "back" / path.name).read_bytes() == path.read_bytes(), path.name


def test_device_map_loads_go_through_the_hook_too(tmp_path: Path, hooked: None) -> None:
    folder, want = _tiny(tmp_path, "20KB")
    compress_folder(folder, tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", device_map="cpu").eval()
    with torch.no_grad():
        assert torch.equal(model(INPUT).logits, want)


@pytest.mark.parametrize("shard", [None, "20KB"], ids=["one-file", "sharded"])
def test_a_variant_loads_from_a_compressed_folder(
    tmp_path: Path, shard: str | None, hooked: None
) -> None:
    """save_pretrained(variant="fp16") writes model.fp16.safetensors: from_pretrained(OUT,
    variant="fp16") said 'no file named model.fp16.safetensors'."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    folder = tmp_path / "tiny"
    LlamaForCausalLM(config).to(torch.bfloat16).eval().save_pretrained(
        folder, variant="fp16", **({"max_shard_size": shard} if shard else {})
    )

    def logits(path: Path) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(path, variant="fp16").eval()
        with torch.no_grad():
            return model(INPUT).logits

    compress_folder(folder, tmp_path / "out")
    assert torch.equal(logits(tmp_path / "out"), logits(folder))
