"""What binds a stream to the model that coded it: the model file's hash is taken before the
coding and checked after it, the caches of a model file know a replaced or rewritten file from
the old one, and llama.cpp's build record is read once, under a lock. Real files, the real
bundled GGUF where a model runs."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from lmgc_core import Pipeline
from lmgc_core.lm import models
from lmgc_core.lm.prior_base import ModelCache
from lmgc_core.util.errors import ConfigError, MismatchError
from tests.plugins.lm.test_lm_priors import HAVE_LLAMA, needs_llama, needs_model


def test_a_file_written_in_place_with_its_mtime_set_back_is_another_file(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    before = models.file_identity(path)
    st = os.stat(path)
    with open(path, "r+b") as f:  # the same inode and size, other bytes
        f.seek(10)
        f.write(b"\x01")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the mtime as it was
    assert models.file_identity(path) != before  # the ctime tells
    replaced = tmp_path / "other"
    shutil.copy2(path, replaced)
    os.replace(replaced, path)  # another inode under the same name
    assert models.file_identity(path) != before


def test_the_model_cache_loads_a_replaced_file_again(tmp_path):
    """The cache was keyed by path, size and mtime: a file replaced by one of the same size and
    mtime kept serving the old weights under the new file's hash."""
    path = tmp_path / "m.gguf"
    path.write_bytes(b"a" * 64)
    cache: ModelCache[str] = ModelCache()
    assert cache.get(path, (), lambda: "first") == "first"
    assert cache.get(path, (), lambda: "again") == "first"
    st = os.stat(path)
    other = tmp_path / "n.gguf"
    other.write_bytes(b"b" * 64)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    assert cache.get(path, (), lambda: "second") == "second"


def test_a_prior_whose_fingerprint_changes_while_it_codes_is_refused(monkeypatch):
    """The stream recorded the fingerprint taken after the coding: a model file replaced
    meanwhile was recorded, and the old weights had coded the stream (exit 0, never decoded)."""
    from lmgc_float.prior import FloatPrior

    pipe = Pipeline.from_config({"prior": "float"})
    coded: list[int] = []
    fingerprint, encode_array = FloatPrior.fingerprint, FloatPrior.encode_array

    def after_coding(self):  # another model file's hash once the coding began
        return {**fingerprint(self), "model_sha256": "new"} if coded else fingerprint(self)

    def encode(self, *args, **kwargs):
        coded.append(1)
        return encode_array(self, *args, **kwargs)

    monkeypatch.setattr(FloatPrior, "fingerprint", after_coding)
    monkeypatch.setattr(FloatPrior, "encode_array", encode)
    with pytest.raises(MismatchError, match="changed while it coded"):
        pipe.compress(np.linspace(-1, 1, 300, dtype=np.float32))


@needs_llama
@pytest.mark.parametrize("option", [{"threads": 100_000}, {"n_batch": 2**32 + 8}])
def test_llamacpp_refuses_thread_and_batch_counts_it_cannot_run(option):
    from lmgc_core.components import registry

    with pytest.raises(ConfigError, match="must be at most"):
        registry.build("prior", "llamacpp", option)


@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed")
def test_llamacpp_system_info_is_the_same_on_every_thread():
    from lmgc_llamacpp.prior import system_info

    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(system_info())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 16 and len(set(seen)) == 1 and seen[0]


@pytest.mark.lm
@needs_llama
@needs_model
def test_a_model_replaced_while_it_codes_is_refused(tmp_path):
    """``mv new.gguf model.gguf`` during a compress: the header recorded the new file's hash
    and the old weights coded the stream."""
    model = tmp_path / "m.gguf"
    shutil.copyfile(models.default_model_path(), model)
    pipe = Pipeline.from_config(
        {"prior": {"name": "llamacpp", "model": str(model), "threads": 1}, "window": 64}
    )
    x = np.full(8, 1.5, np.float32)
    pipe.compress(x)  # loaded and hashed once
    session_open = type(pipe.prior).open

    def open_then_replace(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        session = session_open(self, *args, **kwargs)
        copy = Path(tmp_path / "copy.gguf")
        shutil.copyfile(model, copy)
        with open(copy, "r+b") as f:  # one byte of the last tensor's data changed
            f.seek(-4, os.SEEK_END)
            f.write(b"\x00\x00\x80\x3f")
        os.replace(copy, model)
        return session

    type(pipe.prior).open = open_then_replace
    try:
        with pytest.raises(MismatchError, match="changed while it coded"):
            pipe.compress(x)
    finally:
        type(pipe.prior).open = session_open


@pytest.mark.lm
@needs_llama
@needs_model
def test_a_mix_stream_decodes_after_its_model_moved(tmp_path, monkeypatch):
    """The decode-time model built each expert with its recorded path first (gone, so refused),
    and a model given as a relative path was re-applied relative to the decoding directory."""
    import lmgc_core

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    shutil.copyfile(models.default_model_path(), tmp_path / "old" / "m.gguf")
    monkeypatch.chdir(tmp_path)
    experts = [{"name": "llamacpp", "consult": [0], "threads": 1}, {"name": "float"}]
    config = {"prior": {"name": "mix", "experts": experts, "model": "old/m.gguf",
                        "fallback": False}, "window": 64}  # fmt: skip
    x = np.full(8, 1.5, np.float32)
    blob = Pipeline.from_config(config).compress(x)
    assert lmgc_core.read_header(blob)["pipeline"]["prior"]["model"] == str(
        tmp_path / "old" / "m.gguf"
    )
    monkeypatch.chdir(tmp_path / "new")  # another directory: the recorded path still holds
    assert lmgc_core.decompress(blob).tobytes() == x.tobytes()
    os.replace(tmp_path / "old" / "m.gguf", tmp_path / "new" / "m.gguf")
    back = lmgc_core.decompress(blob, prior_options={"model": str(tmp_path / "new" / "m.gguf")})
    assert back.tobytes() == x.tobytes()


@needs_llama
def test_a_recorded_thread_count_runs_with_at_most_the_usable_cores():
    """threads=32 recorded on a big machine ran a 2-core one with 32 spinning threads."""
    from lmgc_llamacpp.prior import auto_threads, run_threads

    cores = len(os.sched_getaffinity(0))
    assert run_threads(32) == min(32, cores) and run_threads(1) == 1
    assert run_threads(None) == auto_threads()


@pytest.mark.lm
@needs_llama
@needs_model
def test_a_folder_decodes_after_its_model_moved(tmp_path):
    """decompress FOLDER --model (and --test) ignored --model: a folder coded with an LM prior
    could not be decoded once its model had moved; a single archive could."""
    from tests.cli_helpers import lmgc

    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    (tmp_path / "src").mkdir()
    shutil.copyfile(models.default_model_path(), tmp_path / "m1" / "m.gguf")
    np.save(tmp_path / "src" / "g.npy", np.full(12, 0.5, np.float32))
    lmgc("compress", tmp_path / "src", "-o", tmp_path / "out", "--prior", "llamacpp",
         "--model", tmp_path / "m1" / "m.gguf", "--window", "64", "-P", "threads=1")  # fmt: skip
    os.replace(tmp_path / "m1" / "m.gguf", tmp_path / "m2" / "m.gguf")
    moved = ("--model", tmp_path / "m2" / "m.gguf")
    tested = lmgc("decompress", "--test", tmp_path / "out", *moved)
    assert "OK" in tested.stdout and "--model is not used" not in tested.stderr
    done = lmgc("decompress", tmp_path / "out", "-o", tmp_path / "back", *moved)
    assert "--model is not used" not in done.stderr
    assert (tmp_path / "back" / "g.npy").read_bytes() == (tmp_path / "src" / "g.npy").read_bytes()


@pytest.mark.lm
@needs_llama
@needs_model
def test_force_says_which_mismatch_it_decoded_past(tmp_path):
    """``-f`` both overwrites the output and decodes past a mismatch (another model): a user
    who gave it to overwrite was not told the model differed. The checksum still guards; now
    each mismatch is said, for a file and for a folder."""
    from tests.cli_helpers import lmgc

    (tmp_path / "src").mkdir()
    np.save(tmp_path / "src" / "g.npy", np.full(12, 0.5, np.float32))
    other = tmp_path / "other.gguf"  # another file (hash) that computes the same: its name
    shutil.copyfile(models.default_model_path(), other)  # in the metadata changed
    with open(other, "r+b") as f:
        at = f.read(1 << 12).index(b"Smollm2 135M")
        f.seek(at)
        f.write(b"SMOLLM2")
    lmgc("compress", tmp_path / "src", "-o", tmp_path / "out", "--prior", "llamacpp",
         "--window", "64", "-P", "threads=1")  # fmt: skip
    lmgc("compress", tmp_path / "src" / "g.npy", "-o", tmp_path / "g.lmgc", "--prior",
         "llamacpp", "--window", "64", "-P", "threads=1")  # fmt: skip
    for source, out in ((tmp_path / "g.lmgc", tmp_path / "g.npy"), (tmp_path / "out", None)):
        target = ("-o", out) if out else ("-o", tmp_path / "back")
        refused = lmgc("decompress", source, *target, "--model", other, ok=False)
        assert refused.exit_code != 0 and "model_sha256" in refused.stderr
        plain = lmgc("decompress", source, *target, "-f")  # nothing differs: nothing said
        assert "--force decoded it" not in plain.stderr
        forced = lmgc("decompress", source, *target, "-f", "--model", other)
        assert "--force decoded it although" in forced.stderr
        assert "model_sha256" in forced.stderr
