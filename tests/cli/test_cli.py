"""The ``lmgc`` command, run as a real subprocess through its console-script entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.coding.test_roundtrip import SERIALIZERS, float_arrays
from tests.conftest import same_bits

LMGC = shutil.which("lmgc") or str(Path(sys.executable).parent / "lmgc")


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([LMGC, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_npy_round_trip_and_info(tmp_path, grads):
    src = tmp_path / "g.npy"
    np.save(src, grads.reshape(64, 128))
    run("compress", str(src), "-o", str(tmp_path / "g.lmgc"))
    said = run("decompress", str(tmp_path / "g.lmgc"), "-o", str(tmp_path / "back.npy")).stdout
    assert same_bits(np.load(tmp_path / "back.npy"), grads.reshape(64, 128))
    # the compact form checks its bytes by the stream's checksums, not by a SHA-256 of the file
    assert "identical to the source, its stream's checksums verified" in said
    out = run("info", str(tmp_path / "g.lmgc")).stdout  # one array: the compact form, no name
    assert "<f4" in out and "%" in out and "npy" in out
    doc = json.loads(run("info", "--json", str(tmp_path / "g.lmgc")).stdout)
    assert doc["format"] == "npy" and doc["members"][0]["shape"] == [64, 128]
    assert doc["members"][0]["streams"][0]["header"]["array"]["shape"] == [64, 128]


def test_info_of_a_time_axis_chunk_says_what_it_is(tmp_path, grads):
    """A Zarr chunk coded along a time axis keeps each step's pipeline in the step's own
    stream: info says so instead of printing None for its parts and checksum."""
    from lmgc_core import Pipeline
    from lmgc_core.coding import time_axis

    chunk = tmp_path / "c.lmgc"
    chunk.write_bytes(time_axis.encode(Pipeline.from_config({}), grads.reshape(4, 32, 64), 0))
    out = run("info", str(chunk)).stdout
    assert "a time-axis series of 4 steps along axis 0" in out
    assert "None" not in out and "differs between streams" not in out


def test_a_zip_rebuild_names_the_hash_it_checked(tmp_path, grads):
    """A zip archive's rebuilt file is checked against the source's XXH3-128 (recorded since
    2026-12-05; an older archive's SHA-256), and the command says which."""
    src = tmp_path / "g.npz"
    np.savez(src, a=grads[:4096], b=grads[4096:])
    run("compress", str(src), "-o", str(tmp_path / "g.lmgc"))
    said = run("decompress", str(tmp_path / "g.lmgc"), "-o", str(tmp_path / "back.npz")).stdout
    assert (tmp_path / "back.npz").read_bytes() == src.read_bytes()
    assert "identical to the source, XXH3-128 verified" in said
    old = Path(__file__).parents[1] / "fixtures" / "archive-v3-stream-v5" / "npz-stored.lmgc"
    said = run("decompress", str(old), "-o", str(tmp_path / "old.npz")).stdout
    assert "identical to the source, SHA-256 verified" in said


def test_npz_safetensors_and_raw(tmp_path, grads):
    from safetensors.numpy import load_file, save_file

    arrays = {"w": grads[:1000].reshape(10, 100), "b": grads[1000:1010].astype(np.float16)}
    np.savez(tmp_path / "a.npz", **arrays)
    run("compress", str(tmp_path / "a.npz"), "-o", str(tmp_path / "a.lmgc"))
    run("decompress", str(tmp_path / "a.lmgc"), "-o", str(tmp_path / "a_back.npz"))
    with np.load(tmp_path / "a_back.npz") as z:
        assert all(same_bits(z[k], v) for k, v in arrays.items())

    save_file(arrays, str(tmp_path / "m.safetensors"))
    run(
        "compress",
        str(tmp_path / "m.safetensors"),
        "--prior",
        "uniform",
        "-o",
        str(tmp_path / "m.lmgc"),
    )
    run("decompress", str(tmp_path / "m.lmgc"), "-o", str(tmp_path / "m_back.safetensors"))
    back = load_file(str(tmp_path / "m_back.safetensors"))
    assert all(same_bits(back[k], v) for k, v in arrays.items())

    (tmp_path / "r.bin").write_bytes(grads[:500].tobytes())
    run("compress", str(tmp_path / "r.bin"), "--dtype", "float32", "--serializer", "iso",
        "--prior", "adaptive")  # fmt: skip
    run("decompress", str(tmp_path / "r.bin.lmgc"), "-o", str(tmp_path / "r.out"))
    assert (tmp_path / "r.out").read_bytes() == grads[:500].tobytes()
    run("decompress", str(tmp_path / "r.bin.lmgc"), "-o", str(tmp_path / "r.npy"))
    assert same_bits(np.load(tmp_path / "r.npy"), grads[:500])


@pytest.mark.parametrize("fmt", ["yaml", "toml", "json"])
def test_config_files(tmp_path, grads, fmt):
    text = {
        "yaml": "serializer:\n  name: hex\n  separator: ','\n  bytes_per_group: 2\n"
        "prior: uniform\nwindow: 50\n",
        "toml": 'window = 50\nprior = "uniform"\n[serializer]\nname = "hex"\nseparator = ","\n'
        "bytes_per_group = 2\n",
        "json": '{"serializer": {"name": "hex", "separator": ",", "bytes_per_group": 2}, '
        '"prior": "uniform", "window": 50}',
    }[fmt]
    cfg = tmp_path / f"c.{fmt}"
    cfg.write_text(text)
    np.save(tmp_path / "x.npy", grads[:300])
    run("compress", str(tmp_path / "x.npy"), "--config", str(cfg))
    doc = json.loads(run("info", "--json", str(tmp_path / "x.npy.lmgc")).stdout)
    header = doc["members"][0]["streams"][0]["header"]
    assert header["pipeline"]["serializer"]["separator"] == ","
    assert header["pipeline"]["window"] == 50
    run("decompress", str(tmp_path / "x.npy.lmgc"), "-o", str(tmp_path / "y.npy"))
    assert same_bits(np.load(tmp_path / "y.npy"), grads[:300])


def test_errors_are_one_clear_line(tmp_path, grads):
    np.save(tmp_path / "x.npy", grads[:100])
    run("compress", str(tmp_path / "x.npy"))
    blob = bytearray((tmp_path / "x.npy.lmgc").read_bytes())
    blob[200] ^= 1  # inside the stream member
    (tmp_path / "bad.lmgc").write_bytes(bytes(blob))
    out = str(tmp_path / "o.lmgc")
    cases = [  # (args, exit status): 1 for bad data, 2 for bad usage
        (("decompress", str(tmp_path / "bad.lmgc"), "-o", str(tmp_path / "o.npy")), 1),
        (("compress", str(tmp_path / "x.npy"), "-o", out, "--prior", "no-such-prior"), 2),
        (("compress", str(tmp_path / "x.npy"), "-o", out, "-S", "separator=|"), 2),
        (("compress", str(tmp_path / "x.npy"), "-o", out, "--config", "missing.yaml"), 2),
        (("info", str(tmp_path / "x.npy")), 1),
        (("compress", str(tmp_path / "x.npy"), "--no-such-option"), 2),
    ]
    for args, status in cases:
        proc = run(*args, ok=False)
        assert proc.returncode == status, (args, proc.stderr)
        assert proc.stderr.startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "available priors" in run(*cases[1][0], ok=False).stderr
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "o.lmgc").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_estimate_reports_ideal_and_real_sizes(tmp_path, grads):
    np.save(tmp_path / "x.npy", grads[:2000])
    out = run("estimate", str(tmp_path / "x.npy"), "--compress").stdout
    assert "ideal" in out and "real stream" in out


def test_estimate_says_dtype_reads_a_npy_as_raw_values_as_compress_does(tmp_path, grads):
    """``estimate x.npy --dtype D`` estimated the file's bytes, header too, as raw D values
    without a word (``compress`` warns of it); a raw file's --dtype is what it is for."""
    np.save(tmp_path / "x.npy", grads[:500])
    grads[:500].tofile(tmp_path / "x.raw")
    said = "x.npy is a .npy file: --dtype codes its bytes (headers too) as raw float32 values"
    compressed = run("compress", str(tmp_path / "x.npy"), "--dtype", "float32")
    estimated = run("estimate", str(tmp_path / "x.npy"), "--dtype", "float32")
    assert said in compressed.stderr and said in estimated.stderr
    assert f"{os.path.getsize(tmp_path / 'x.npy')} bytes, ideal" in estimated.stdout
    assert run("estimate", str(tmp_path / "x.raw"), "--dtype", "float32").stderr == ""


def test_import_is_light():
    code = (
        "import sys, lmgc_core; assert 'numpy' not in sys.modules;"
        "import lmgc_core.components.registry as r; r.registrations();"
        "bad = [m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules];"
        "assert not bad, bad; assert lmgc_core.Pipeline is lmgc_core.coding.pipeline.Pipeline"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_command_is_lmgc_core_main(tmp_path, grads):
    """``lmgc`` and ``python -m lmgc_core`` are one entry point; it loads the CLI with the
    garbage collector paused and has it running again for the command's work."""
    assert "from lmgc_core.__main__ import main" in Path(LMGC).read_text()
    src, packed, back = tmp_path / "g.npy", tmp_path / "g.lmgc", tmp_path / "b.npy"
    np.save(src, grads)
    module = [sys.executable, "-m", "lmgc_core"]
    subprocess.run([*module, "compress", str(src), "-o", str(packed), "-q"], check=True)
    run("decompress", str(packed), "-o", str(back))
    assert back.read_bytes() == src.read_bytes()
    code = (
        "import gc, os, lmgc_core.cli.commands as cli, lmgc_core.__main__ as entry;"
        "cli.main = lambda: print(gc.isenabled(), gc.get_freeze_count() > 0,"
        " os.environ['OPENBLAS_THREAD_TIMEOUT'], 'numpy' in __import__('sys').modules);"
        "entry.main()"
    )
    for env, timeout in (({}, "4"), ({"OPENBLAS_THREAD_TIMEOUT": "12"}, "12")):  # the user's wins
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | env
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
        )
        assert out.stdout.split() == ["True", "True", timeout, "False"]  # set before numpy loads


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=lambda s: str(sorted(s.items())))
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(array=float_arrays())
def test_cli_round_trip_property(tmp_path, serializer, array):
    """Hypothesis arrays (NaN payloads, -0.0, inf, subnormals, 0-d, empty) through the click CLI,
    in every serializer layout. The prior is step-coded (``adaptive``): the array-coding default
    ``float`` codes the values itself and never runs the serializer. The stream records the
    serializer, and its symbol count is the serializer's own for the array's bytes."""
    import zipfile

    from click.testing import CliRunner

    from lmgc_core import read_header
    from lmgc_core.cli.commands import cli
    from lmgc_core.components import registry

    src, packed, back = tmp_path / "a.npy", tmp_path / "a.lmgc", tmp_path / "b.npy"
    np.save(src, array)
    options = {k: v for k, v in serializer.items() if k != "name"}
    built = registry.build("serializer", serializer["name"], options)
    window = max(24, built.period + 1)  # the smallest window holds BOS + one period
    opts = [f"{k}={json.dumps(v)}" for k, v in options.items()]
    args = ["compress", str(src), "-o", str(packed), "-f", "--serializer", serializer["name"]]
    args += [a for o in opts for a in ("-S", o)] + ["--prior", "adaptive", "--window", str(window)]
    runner = CliRunner()
    made = runner.invoke(cli, args)
    assert made.exit_code == 0, made.output
    if not zipfile.is_zipfile(packed):  # one array in one chunk: the compact form (a stream)
        headers = [read_header(packed.read_bytes())]
    else:
        with zipfile.ZipFile(packed) as z:
            headers = [read_header(z.read(n)) for n in z.namelist() if n.endswith(".lmgc")]
    assert len(headers) == 1
    (header,) = headers
    assert header["pipeline"]["prior"]["name"] == "adaptive"
    assert header["pipeline"]["serializer"] == {"name": serializer["name"], **built.get_config()}
    (part,) = header["parts"]
    if part.get("coding") == "stored":  # the prior's blocks were larger than the array's bytes
        assert part["blocks"][0][0] == array.nbytes < part["stored"]["steps"]
    else:
        assert part["n_symbols"] == built.n_symbols(array.nbytes)
        assert (part["n_symbols"] > 0) == (array.size > 0)
    done = runner.invoke(cli, ["decompress", str(packed), "-o", str(back), "-f"])
    assert done.exit_code == 0, done.output
    # the .npy comes back byte for byte (bfloat16 stays descr '<V2', as np.save wrote it)
    assert back.read_bytes() == src.read_bytes()
    assert np.load(back).tobytes() == np.ascontiguousarray(array).tobytes()


@pytest.mark.parametrize(
    "prior",
    [("--prior", "float"),
     ("--prior", "mix", "-P", 'experts=[{"name": "float"}, {"name": "adaptive"}]',
      "-P", "fallback=false")],
)  # fmt: skip
def test_a_model_no_stream_takes_is_said(tmp_path, prior):
    """``--model`` with streams of no LM: the output is right and the model unused, which is
    said. A mix of float and adaptive experts takes ``model`` as an option but gives it to
    none of them: it was dropped without a word."""
    from tests.cli_helpers import lmgc

    x = np.linspace(-1, 1, 64, dtype=np.float32)
    np.save(tmp_path / "g.npy", x)
    (tmp_path / "elsewhere.gguf").write_bytes(b"GGUF")  # checked to exist, never loaded
    lmgc("compress", tmp_path / "g.npy", "-o", tmp_path / "g.lmgc", *prior)
    done = lmgc("decompress", tmp_path / "g.lmgc", "-o", tmp_path / "back.npy",
                "--model", tmp_path / "elsewhere.gguf")  # fmt: skip
    assert "--model is not used" in done.stderr
    assert np.load(tmp_path / "back.npy").tobytes() == x.tobytes()
