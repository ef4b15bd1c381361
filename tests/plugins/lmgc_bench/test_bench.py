"""The benchmark harness end to end on a tiny grid: real training, real codecs, no mocks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from lmgc_bench import baselines
from lmgc_bench.baselines import BASELINES, Codec, make_codec, measure


class BrokenCodec(Codec):
    """Decodes to the wrong bytes (one bit flipped): the harness must flag it."""

    name = "broken"

    def compress(self, data: bytes) -> bytes:
        return data[: len(data) // 2]

    def decompress(self, blob: bytes) -> bytes:
        out = bytearray(blob * 2)
        out[0] ^= 1
        return bytes(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real gradient store: a tiny ConvNet and ViT trained for a few steps."""
    from lmgc_bench.collect import collect

    path = tmp_path_factory.mktemp("grads") / "grads.zarr"
    collect(path, ["convnet", "vit"], steps=6, every=2, image_size=8, batch_size=16, seed=3)
    return path


@pytest.fixture
def gradient(store) -> np.ndarray:
    from lmgc_bench.collect import load_snapshots

    grads, _ = load_snapshots(store, "convnet")
    return grads[-1]


def test_collect_metadata_and_determinism(store, tmp_path):
    from lmgc_bench.collect import collect, list_store, load_snapshots

    info = list_store(store)
    assert sorted(info) == ["convnet", "vit"]
    grads, meta = load_snapshots(store, "convnet")
    assert grads.dtype == np.float32 and grads.shape == (3, meta["n_params"])
    assert meta["steps"] == [0, 2, 4] and meta["dataset"] == "sklearn-digits"
    # parameter table covers the vector exactly, in order
    ends = [p["offset"] + p["size"] for p in meta["params"]]
    assert meta["params"][0]["offset"] == 0 and ends[-1] == meta["n_params"]
    assert all(p["size"] == int(np.prod(p["shape"])) for p in meta["params"])
    assert np.isfinite(grads).all() and np.abs(grads).sum() > 0
    # same seed -> bit-identical gradients
    again = tmp_path / "again.zarr"
    collect(again, ["convnet"], steps=6, every=2, image_size=8, batch_size=16, seed=3)
    assert load_snapshots(again, "convnet")[0].tobytes() == grads.tobytes()


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_round_trips(name, gradient):
    codec = make_codec(name)
    if baselines.missing_modules(codec):
        pytest.skip(f"{name} needs {baselines.missing_modules(codec)}")
    data = gradient.tobytes()
    whole = measure(codec, data)
    assert whole.ok, whole.error
    assert whole.compressed_bytes > 0
    chunked = measure(codec, data, chunk=512)
    assert chunked.ok, chunked.error
    assert chunked.n_chunks == -(-len(data) // 512)
    if not codec.float32_only:  # odd lengths (FLAC pads, PNG pads its last row)
        odd = measure(codec, bytes(range(256)) * 3 + b"\x07")
        assert odd.ok, odd.error


def test_broken_codec_is_flagged(monkeypatch, gradient):
    m = measure(BrokenCodec(), gradient.tobytes())
    assert not m.ok and "mismatch" in m.error
    assert m.as_dict()["rate"] is None

    class Raises(Codec):
        name = "raises"

        def compress(self, data: bytes) -> bytes:
            raise RuntimeError("boom")

    r = measure(Raises(), b"abcd")
    assert not r.ok and "boom" in r.error


def test_bench_grid_end_to_end(store, tmp_path, monkeypatch):
    from lmgc_bench.grid import bench, load_config, run_grid

    monkeypatch.setitem(BASELINES, "broken", BrokenCodec)
    npy = tmp_path / "extra.npy"
    from lmgc_bench.collect import load_snapshots

    np.save(npy, load_snapshots(store, "vit")[0][:, :3000])
    cfg = {
        "title": "test",
        "workloads": [
            {"arch": "all", "snapshots": 2},
            {"npy": str(npy), "name": "vit-npy", "snapshots": [0, 2]},
        ],
        "experiments": [
            {
                "name": "whole",
                "baselines": [*BASELINES],
                "chunk": [None, 512],
                "max_floats": 2048,
                "lmgc": {"prior": [{"name": "adaptive"}], "window": [256]},
                "plot": ["codecs", "throughput"],
            },
            {
                "name": "win",
                "workloads": ["convnet"],
                "max_floats": 512,
                "lmgc": {"prior": ["adaptive"], "window": [32, 128]},
                "plot": ["window"],
            },
            {
                "name": "stages",
                "workloads": ["vit"],
                "max_floats": 1024,
                "stages": [[], [{"name": "quantize", "bits": 8}]],
                "baselines": ["lzma", "fpzip"],
                "lmgc": {"prior": ["adaptive"], "window": [128]},
                "plot": ["stages"],
            },
        ],
    }
    out = tmp_path / "out"
    paths = bench(cfg, out_dir=out, zarr_path=str(store), progress=False)
    for key in ("markdown", "summary_csv", "cells_csv"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == [
        "stages-stages.png", "whole-codecs.png", "whole-throughput.png", "win-window.png"
    ]  # fmt: skip

    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    by_codec: dict[str, list[dict]] = {}
    for c in cells:
        by_codec.setdefault(c["label"], []).append(c)
    # every real baseline round-tripped on every cell; the broken one is flagged on every cell
    for name in BASELINES:
        if name == "broken":
            continue
        for c in by_codec[make_codec(name).label]:
            assert c["ok"], (name, c["error"])
    broken = [c for c in cells if c["label"].startswith("broken")]
    assert broken and all(not c["ok"] and "mismatch" in c["error"] for c in broken)
    lm = [c for c in cells if c["kind"] == "lmgc"]
    assert lm and all(c["ok"] for c in lm), [c["error"] for c in lm if not c["ok"]]
    # quantized payload: fpzip does not apply (skipped, not failed), lzma does
    staged = [c for c in cells if c["stage"] != "none" and c["kind"] == "baseline"]
    assert any(c["label"].endswith("lzma") and c["ok"] for c in staged)
    assert not any(c["label"].endswith("fpzip") for c in staged)  # skipped cells are not cached

    md = paths["markdown"].read_text()
    assert "**flagged** broken" in md and "| broken |" in md
    with open(paths["summary_csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["rate_mean"] == "" for r in rows if r["label"].startswith("broken"))
    good = [r for r in rows if r["kind"] == "baseline" and not r["label"].startswith("broken")]
    assert good and all(0 < float(r["rate_mean"]) < 200 for r in good if r["rate_mean"])
    # workloads: 2 archs from the store + the npy one; 2 snapshots each
    assert {c["workload"] for c in cells} == {"convnet", "vit", "vit-npy"}

    # resume: a second run takes every cell from the cache (same keys, no new lines)
    n_lines = len(cells)
    records = run_grid(cfg, out, zarr_path=str(store), progress=False)
    assert len((out / "cells.jsonl").read_text().splitlines()) == n_lines
    assert {r["key"] for r in records if not r["skipped"]} == {c["key"] for c in cells}
    skipped = [r for r in records if r["skipped"]]
    assert skipped and all("float32-only" in r["error"] for r in skipped)

    # the packaged config parses and names only known plots and baselines
    small = load_config("small.yaml")
    assert {e["name"] for e in small["experiments"]} >= {"whole-tensors", "smollm2-256"}
    full = load_config("results.yaml")  # extends small.yaml
    assert [e["name"] for e in full["experiments"]][: len(small["experiments"])] == [
        e["name"] for e in small["experiments"]
    ]
    assert full["output"] == "bench-out/results" and full["workloads"] == small["workloads"]


def test_cli_commands_registered(tmp_path):
    import click
    from click.testing import CliRunner
    from lmgc_bench import register_commands

    @click.group()
    def cli():
        pass

    register_commands(cli=cli)
    assert {"collect", "bench"} <= set(cli.commands)
    runner = CliRunner()
    res = runner.invoke(
        cli, ["collect", "--out", str(tmp_path / "g.zarr"), "--arch", "convnet", "--steps", "2",
              "--every", "1", "--image-size", "8"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "convnet:" in res.output and (tmp_path / "g.zarr").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "workloads: [{arch: all}]\n"
        "experiments: [{name: e, baselines: [zstd, pcodec], plot: [codecs]}]\n"
    )
    res = runner.invoke(
        cli, ["bench", "--config", str(cfg), "--zarr", str(tmp_path / "g.zarr"), "--out",
              str(tmp_path / "o"), "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "results.md").exists()
    out = tmp_path / "none-out"  # made before the store was looked for
    res = runner.invoke(cli, ["bench", "--config", str(cfg), "--zarr", str(tmp_path / "none"),
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code != 0 and "lmgc collect" in res.output and not out.exists()


def test_lmgc_help_is_fast_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from lmgc_core.cli.commands import main; "
         "sys.argv=['lmgc', '--help']; main()"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "bench" in out.stdout and "collect" in out.stdout
    heavy = "('torch', 'sklearn', 'matplotlib', 'zarr', 'zstandard')"
    code = f"import lmgc_core, lmgc_bench, sys; print([m for m in {heavy} if m in sys.modules])"
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert mods.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("- just\n- a list\n", "is a mapping"),
        ("extends: b.yaml\nexperiments: []\n", "a loop"),  # b.yaml extends itself
        ("experiments: [\n", "not valid YAML"),
        ("experiments: [1, 2]\n", "mappings with a 'name'"),
        ("name: x\n", "needs a list of 'experiments'"),
        # misspelt keys were dropped and the grid run at full size, exit 0
        ("workloadz: []\nexperiments: []\n", "unknown key workloadz"),
        ("experiments: [{name: e, max_snapshot: 1}]\n", "experiment 'e': unknown key max_snapshot"),
        ("workloads: [{npy: a.npy, snapshot: 1}]\nexperiments: []\n", "unknown key snapshot"),
    ],
)
def test_bad_bench_configs_are_one_value_error(tmp_path, text, said):
    """They were AttributeError, RecursionError or yaml's ParserError, exit 1 with a trace."""
    from lmgc_bench.grid import load_config

    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(ValueError, match=said):
        load_config(tmp_path / "b.yaml")


@pytest.mark.parametrize(
    ("experiment", "said"),
    [
        ({"lmgc": {"prior": [{"name": "adaptive"}], "windw": [64]}, "max_floats": 64}, "windw"),
        ({"lmgc": {"measure": "bogus"}, "max_floats": 64}, "measure must be one of"),
        ({"lmgc": {}, "max_floats": -5}, "max_floats must be a positive integer"),
        ({"baselines": ["lzma"], "chunk": [-5], "max_floats": 64}, "chunk must be a positive"),
        # each of these ended in the catch-all ("'int' object has no attribute 'items'")
        ({"lmgc": {"prior": 5}}, "experiment 'e': a prior must be a name or a mapping"),
        ({"lmgc": {"coder": [1]}}, "experiment 'e': coder must be a name or a mapping"),
        ({"lmgc": {"serializer": {"bytes": 3}}}, "a serializer must be a name or a mapping"),
        ({"baselines": 7}, "experiment 'e': baselines must be a list, not 7"),
        ({"baselines": [3]}, "a baseline codec must be a name or a mapping"),
        ({"baselines": ["zstd"], "stages": 3}, "stages must be a list, not 3"),
        ({"baselines": ["zstd"], "stages": [[5]]}, "a stage must be a name or a mapping"),
        ({"baselines": ["zstd"], "workloads": "w"}, "workloads must be a list, not 'w'"),
        ({"baselines": ["zstd"], "max_snapshots": "x"}, "max_snapshots must be a positive"),
    ],
)
def test_bad_experiments_are_refused_before_running(experiment, said):
    """An unknown key was ignored, ``measure: bogus`` became an ideal estimate, and a negative
    ``max_floats`` an empty slice whose ratio divided by zero."""
    from lmgc_bench.grid import Workload, expand

    cfg = {"experiments": [{"name": "e", **experiment}]}
    w = Workload("w", "test", [0], lambda _: np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=said):
        list(expand(cfg, [w]))


@pytest.mark.parametrize(
    ("workloads", "said"),
    [
        (5, "'workloads' must be a list of mappings"),
        ([5], "'workloads' must be a list of mappings"),
        ([{"npy": "g.npy", "snapshots": "x"}], "snapshots must be 'all', a positive count"),
        ([{"npy": "g.npy", "snapshots": ["x"]}], "snapshots must be 'all', a positive count"),
    ],
)
def test_bad_workloads_are_refused_clearly(tmp_path, monkeypatch, workloads, said):
    """``TypeError: 'int' object is not iterable`` and ``invalid literal for int()`` before."""
    from lmgc_bench.grid import build_workloads

    monkeypatch.chdir(tmp_path)
    np.save("g.npy", np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match=said):
        build_workloads({"workloads": workloads})
    for fine, picked in (([-1], [1]), ((0, 1), [0, 1]), (2.0, [0, 1]), ([5, 0], [0])):
        (w,) = build_workloads({"workloads": [{"npy": "g.npy", "snapshots": fine}]})
        assert w.snapshots == picked, fine


def test_cells_that_differ_get_rows_of_their_own():
    """Two experiments of one name, and an lmgc block per measure, shared one row: their
    numbers were averaged together (n=4 for 2 snapshots)."""
    from lmgc_bench.grid import Workload, expand

    w = Workload("w", "test", [0], lambda _: np.zeros(8, np.float32))
    twice = {"experiments": [{"name": "e", "lmgc": {}}, {"name": "e", "lmgc": {}}]}
    with pytest.raises(ValueError, match="used twice"):
        list(expand(twice, [w]))
    for bad in ("../../evil", "a/b", ""):
        with pytest.raises(ValueError, match="names the plot files"):
            list(expand({"experiments": [{"name": bad, "lmgc": {}}]}, [w]))
    blocks = [{"measure": "estimate"}, {"measure": "teacher-forced"}]
    cells = list(expand({"experiments": [{"name": "e", "lmgc": blocks}]}, [w]))
    assert len({c.label for c in cells}) == 2
