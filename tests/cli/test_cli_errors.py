"""Every failure a new user met (issue 10, "Why") now gives one clear ``error:`` line and the
right exit status: 2 for usage, 1 for bad data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import lmgc, one_error_line

LMGC = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")


@pytest.fixture
def g(tmp_path, grads) -> Path:
    np.save(tmp_path / "g.npy", grads[:512])
    return tmp_path / "g.npy"


def test_bad_input_files(tmp_path, g):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "obj.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    message = one_error_line(lmgc("compress", tmp_path / "obj.npy", ok=False), 1)
    assert "object" in message and "Python objects" in message
    np.savez(tmp_path / "a.npz", x=np.arange(10.0))
    from safetensors.numpy import save_file

    save_file({"x": np.arange(10.0)}, str(tmp_path / "s.safetensors"))
    for name in ("g.npy", "a.npz", "s.safetensors"):
        good = (tmp_path / name).read_bytes()
        suffix = Path(name).suffix
        (tmp_path / f"random{suffix}").write_bytes(rng.bytes(len(good)))
        (tmp_path / f"cut{suffix}").write_bytes(good[: len(good) * 2 // 3])
        for bad in (f"random{suffix}", f"cut{suffix}"):
            message = one_error_line(lmgc("compress", tmp_path / bad, ok=False), 1)
            assert bad in message


@pytest.mark.parametrize("prior", ["adaptive", "llamacpp", "transformers"])
@pytest.mark.parametrize("window", [1, 3, 5])
def test_windows_too_small_for_a_period_are_refused(g, prior, window):
    """The LM priors crashed (``session fed 4 tokens, its window is 3``) and adaptive made a
    stream larger than its input. The refusal comes before any model is loaded."""
    pytest.importorskip({"llamacpp": "llama_cpp", "transformers": "torch"}.get(prior, "numpy"))
    args = ("compress", g, "-o", f"{g}.x", "--prior", prior, "--window", str(window))
    message = one_error_line(lmgc(*args, ok=False), 2)
    assert f"window {window} is too small" in message and "at least 10" in message


def test_options_without_a_component_go_to_the_default(g):
    from lmgc_core.coding.pipeline import DEFAULTS

    default = DEFAULTS["prior"]["name"]
    message = one_error_line(lmgc("compress", g, "-P", "no_such_option=3", ok=False), 2)
    assert f"prior {default!r} has no option 'no_such_option'; valid options:" in message
    assert "must be a name" not in message
    message = one_error_line(lmgc("compress", g, "-S", "foo=1", ok=False), 2)
    assert "serializer 'hex' has no option 'foo'; valid options: bytes_per_group" in message
    lmgc("compress", g, "-S", "bytes_per_group=2", "--prior", "adaptive", "-o", f"{g}.2")
    assert '"bytes_per_group": 2' in lmgc("info", "--json", f"{g}.2").stdout


@pytest.mark.parametrize(
    ("options", "config", "named"),
    [
        (("--window", "100"), "window: 100", "--window 100"),
        (("--batch", "3"), "batch: 3", "--batch 3"),
        (("--serializer", "iso"), "serializer: iso", "--serializer iso"),
        (("-S", "separator=,"), "serializer: {name: hex, separator: ','}", '-S separator=","'),
    ],
)
def test_step_options_the_float_prior_ignores_are_refused(tmp_path, g, options, config, named):
    """The float prior codes whole arrays: these were recorded in the header and did nothing.
    Their defaults (a recorded config pasted back) still pass, and a step-coded prior uses them."""
    message = one_error_line(lmgc("compress", g, "-o", tmp_path / "x.lmgc", *options, ok=False), 2)
    assert f"{named} would do nothing: prior 'float' codes whole arrays" in message
    assert "apply to priors that code symbol by symbol (adaptive," in message
    assert not (tmp_path / "x.lmgc").exists()
    (tmp_path / "c.yaml").write_text(config)
    from_file = lmgc("compress", g, "--config", tmp_path / "c.yaml", ok=False)
    assert named in one_error_line(from_file, 2)
    lmgc("compress", g, "-o", tmp_path / "d.lmgc", "--window", "512", "--batch", "16384",
         "--serializer", "hex")  # fmt: skip
    lmgc("compress", g, "-o", tmp_path / "a.lmgc", "--prior", "adaptive", *options)


def test_unknown_options_of_lazy_lm_factories_list_the_valid_ones(g):
    pytest.importorskip("llama_cpp")
    args = ("compress", g, "-o", f"{g}.x", "--prior", "llamacpp", "-P", "foo=1")
    message = one_error_line(lmgc(*args, ok=False), 2)
    assert "prior 'llamacpp' has no option 'foo'; valid options: model," in message


def test_model_errors_blame_the_model(tmp_path, g):
    lmgc("compress", g)
    # --model is for the priors that have one: a float stream (a mix that kept its fallback,
    # an LM archive's byte members) decodes as it is (it was refused: no option 'model')
    lmgc("decompress", f"{g}.lmgc", "--model", g, "-o", tmp_path / "back.npy")
    assert (tmp_path / "back.npy").read_bytes() == Path(g).read_bytes()
    missing = tmp_path / "nowhere.gguf"
    for args in (
        ("decompress", f"{g}.lmgc", "-o", tmp_path / "x.npy", "--model", missing),
        ("compress", g, "-o", tmp_path / "x.lmgc", "--prior", "llamacpp", "--model", missing),
    ):
        message = one_error_line(lmgc(*args, ok=False), 2)
        assert "no such file or folder" in message and "pip install" not in message


def test_a_model_no_stream_takes_is_said(tmp_path, g):
    """``--model`` on an archive coded without an LM was dropped without a word (exit 0): the
    decode is right (it needs no model), but the user meant the model to be used."""
    unused = "none of its streams needs a model (coded without an LM prior, or stored): --model"
    lmgc("compress", g)
    (tmp_path / "folder").mkdir()
    shutil.copyfile(g, tmp_path / "folder" / "g.npy")
    lmgc("compress", tmp_path / "folder", "-o", tmp_path / "packed", "-q")
    model = ("--model", g)
    for args in (
        ("decompress", f"{g}.lmgc", "-o", tmp_path / "back.npy", *model),
        ("decompress", "--test", f"{g}.lmgc", *model),
        ("decompress", tmp_path / "packed", "-o", tmp_path / "back", *model),
        ("decompress", "--test", tmp_path / "packed", *model),
    ):
        assert unused in lmgc(*args).stderr, args
    assert (tmp_path / "back.npy").read_bytes() == Path(g).read_bytes()
    assert (tmp_path / "back" / "g.npy").read_bytes() == Path(g).read_bytes()
    assert "warning" not in lmgc("decompress", "--test", f"{g}.lmgc").stderr


def test_usage_errors_exit_2_with_one_line(tmp_path, g):
    for args in (
        ("compress",),
        ("compress", g, "--no-such-flag"),
        ("compress", tmp_path / "missing.npy"),
        ("compress", g, "--chunk-size", "10"),
        ("compress", g, "--window", "many"),
        ("decompress", g),  # no .lmgc suffix and no -o
        ("compress", g, "-o", tmp_path / "no" / "dir" / "x"),
        ("frobnicate",),
    ):
        one_error_line(lmgc(*args, ok=False), 2)


def test_info_json_is_one_document_and_damage_exits_1(tmp_path, g):
    import json

    lmgc("compress", g)
    json.loads(lmgc("info", "--json", f"{g}.lmgc").stdout)
    blob = Path(f"{g}.lmgc").read_bytes()
    (tmp_path / "t.lmgc").write_bytes(blob[:-40])
    for command in ("info", "ls"):
        one_error_line(lmgc(command, tmp_path / "t.lmgc", ok=False), 1)
    result = lmgc("info", "--json", tmp_path / "t.lmgc", ok=False)
    one_error_line(result, 1)
    assert result.stdout == ""


def test_real_process_pipes_and_a_closed_reader(tmp_path, grads):
    """Subprocesses: stdin -> stdout both ways, and ``lmgc info | head`` stops quietly."""
    np.savez(tmp_path / "m.npz", **{f"t{i}": grads[i * 64 : (i + 1) * 64] for i in range(40)})
    data = (tmp_path / "m.npz").read_bytes()
    packed = subprocess.run(
        [LMGC, "compress", "-", "-q"], input=data, capture_output=True, check=True, timeout=300
    ).stdout
    back = subprocess.run(
        [LMGC, "decompress", "-"], input=packed, capture_output=True, check=True, timeout=300
    )
    assert back.stdout == data and back.stderr.startswith(b"<stdin> -> -")
    (tmp_path / "m.lmgc").write_bytes(packed)
    archive = tmp_path / "m.lmgc"
    shell = f"'{LMGC}' info '{archive}' | head -c 1; '{LMGC}' ls '{archive}' | head -0"
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=300)
    assert proc.stderr == "", proc.stderr
    proc = subprocess.run([LMGC, "compress", str(tmp_path / "m.npz")], capture_output=True,
                          text=True, timeout=300, input="")  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == ""  # no progress bar off a terminal


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("c.json", '{"stages": [{"name": "quantize", "bits": 8}], "stages": []}', "given twice"),
        ("c.yaml", "prior: float\nprior: adaptive\n", "given twice"),
        ("c.yaml", "stages:\n  - name: quantize\n    bits: 8\n    bits: 2\n", "given twice"),
        ("c.yaml", "1: 2\nfoo: 3\n", "unknown pipeline keys"),  # sorting them raised TypeError
        ("c.yaml", '1: 2\n"1": 3\n', "unknown pipeline keys"),  # two keys: 1 and "1"
    ],
)
def test_config_files_with_repeated_or_odd_keys_are_refused(tmp_path, g, name, text, words):
    """A repeated key kept its last value (a lossy stage dropped without a word)."""
    (tmp_path / name).write_text(text)
    line = one_error_line(lmgc("compress", g, "--config", tmp_path / name, ok=False), 2)
    assert words in line


def test_an_option_given_twice_is_refused(g):
    result = lmgc("compress", g, "--stage", "quantize:bits=8,bits=2", ok=False)
    assert "given twice" in one_error_line(result, 2)
    # a pipeline option of one value given twice kept the last: "--config q8 --config plain"
    # dropped the lossy stage without a word, "-l 2 -l 1" coded at level 1
    for twice in (("-l", "2", "-l", "1"), ("--prior", "float", "--prior", "adaptive")):
        result = lmgc("compress", g, *twice, ok=False)
        assert "given 2 times; give it once" in one_error_line(result, 2)


def test_dtype_on_a_file_of_a_known_format_is_said(tmp_path, g):
    """Its header was coded as float32 values (an archive larger than the file) without a
    word; --dtype on any file codes it as raw values, by design, now said."""
    result = lmgc("compress", g, "--dtype", "float32", "-o", tmp_path / "raw.lmgc")
    assert "is a .npy file: --dtype codes its bytes (headers too) as raw float32" in result.stderr


def test_estimate_of_a_file_without_arrays_is_an_error(tmp_path, g):
    """A zip with no .npy member printed nothing, exit 0; a stream was taken for raw data."""
    np.savez(tmp_path / "x.npz", a=np.load(g))
    lmgc("compress", tmp_path / "x.npz", "-o", tmp_path / "zip.lmgc")
    line = one_error_line(lmgc("estimate", tmp_path / "zip.lmgc", ok=False), 2)
    assert "holds no arrays" in line
    lmgc("compress", g, "-o", tmp_path / "stream.lmgc")
    line = one_error_line(lmgc("estimate", tmp_path / "stream.lmgc", ok=False), 2)
    assert "is an lmgc archive or stream: decompress it first" in line


def test_a_name_that_is_not_utf8_is_said_escaped(tmp_path, g):
    """The summary line raised UnicodeEncodeError after the output was written (exit 1), and
    the inputs after it were never compressed."""
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/b\xff.npy"))
    shutil.copyfile(g, odd)
    result = lmgc("compress", odd, g)
    assert "b\\udcff.npy" in result.stdout and Path(f"{g}.lmgc").exists()


@pytest.mark.parametrize(
    ("value", "on"), [("0", False), ("false", False), ("off", False), ("", False), ("1", True)]
)
def test_lmgc_debug_reads_off_values_as_off(monkeypatch, value, on):
    """``LMGC_DEBUG=0`` turned tracebacks on (any non-empty value did)."""
    from lmgc_core.cli import commands

    monkeypatch.setenv("LMGC_DEBUG", value)
    assert commands._debugging() is on


def test_a_header_declaring_a_negative_dimension_is_refused_by_ls_and_decompress(tmp_path):
    """ls listed (-256,) and a negative size, exit 0; decompress blamed an API argument."""
    import lmgc_core
    from lmgc_core.stream import container

    blob = lmgc_core.compress(np.arange(256, dtype=np.float32))
    head, _ = container.read_header(blob)
    forged = container.pack(
        {**head, "array": {**head["array"], "shape": [-256]}},
        [bytes(b) for b in container.unpack(blob, container.read_header(blob)).blocks],
    )
    (tmp_path / "neg.lmgc").write_bytes(forged)
    for command in ("ls", "decompress"):
        line = one_error_line(lmgc(command, tmp_path / "neg.lmgc", ok=False), 1)
        assert "negative dimension" in line or "bad array entry" in line, line
