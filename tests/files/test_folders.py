"""Model folders: every tensor file coded, the rest copied, the folder back byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from lmgc_core.files import folders
from lmgc_core.files.archive import SUFFIX
from lmgc_core.files.folders import FOLDER_MANIFEST, FolderError, compress_folder, decompress_folder
from lmgc_core.files.outputs import DiskSpaceError
from lmgc_core.util.errors import ConfigError, LMGCError
from tests.cli_helpers import lmgc, one_error_line


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _model_folder(root: Path, grads: np.ndarray) -> Path:
    """A folder like a published model: two shards and their index, config, tokenizer, a
    torch checkpoint in a subfolder, an .npy, a file that says it is safetensors but is not,
    and a file already named .lmgc (which must come back as it was)."""
    root.mkdir()
    w = grads.reshape(64, 128)
    safetensors.numpy.save_file({"a.weight": w[:32], "a.bias": w[0]}, root / "m-1-of-2.safetensors")
    safetensors.numpy.save_file({"b.weight": w[32:]}, root / "m-2-of-2.safetensors")
    index = {
        "metadata": {"total_size": w.nbytes + 512},
        "weight_map": {
            "a.weight": "m-1-of-2.safetensors",
            "a.bias": "m-1-of-2.safetensors",
            "b.weight": "m-2-of-2.safetensors",
        },
    }
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    (root / "config.json").write_text('{"model_type": "mlp"}')
    (root / "tokenizer.json").write_bytes(bytes(range(256)) * 3)
    (root / "optim").mkdir()
    torch.save({"w": torch.from_numpy(w[:8].copy())}, root / "optim" / "ckpt.pt")
    np.save(root / "optim" / "g.npy", grads[:300])
    (root / "broken.safetensors").write_bytes(b"\x05" * 40)
    (root / "notes.lmgc").write_bytes(b"not an archive")
    return root


def test_folder_round_trips_byte_identical(tmp_path: Path, grads: np.ndarray) -> None:
    src = _model_folder(tmp_path / "model", grads)
    result = compress_folder(src, tmp_path / "out")
    assert sorted(result.coded) == [
        "m-1-of-2.safetensors", "m-2-of-2.safetensors", "optim/ckpt.pt", "optim/g.npy"
    ]  # fmt: skip
    assert [p for p, _ in result.uncoded] == ["broken.safetensors"]
    assert "broken.safetensors" in result.copied and "notes.lmgc" in result.copied
    out = _tree(tmp_path / "out")
    assert "m-1-of-2.safetensors.lmgc" in out and "m-1-of-2.safetensors" not in out
    assert out["config.json"] == (src / "config.json").read_bytes()
    index = "model.safetensors.index.json"
    assert out[index] == (src / index).read_bytes()
    doc = json.loads(out[FOLDER_MANIFEST])
    assert doc["uncoded"][0]["path"] == "broken.safetensors"
    decompress_folder(tmp_path / "out", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


def test_progress_counts_every_source_byte(
    tmp_path: Path, grads: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[folders.Progress] = []

    class Recorded(folders.Progress):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            bars.append(self)

    monkeypatch.setattr(folders, "Progress", Recorded)
    src = _model_folder(tmp_path / "model", grads)
    total = sum(len(b) for b in _tree(src).values())
    compress_folder(src, tmp_path / "out")
    decompress_folder(tmp_path / "out", tmp_path / "back")
    assert [b.done for b in bars] == [total, total]


def test_an_index_naming_missing_shards_is_a_clear_error(tmp_path: Path, grads: np.ndarray) -> None:
    src = _model_folder(tmp_path / "model", grads)
    (src / "m-2-of-2.safetensors").unlink()
    with pytest.raises(FolderError, match=r"m-2-of-2\.safetensors"):
        compress_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_outputs_are_not_overwritten_without_force(tmp_path: Path, grads: np.ndarray) -> None:
    src = _model_folder(tmp_path / "model", grads)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    with pytest.raises(ConfigError, match="not empty"):
        compress_folder(src, tmp_path / "out")
    with pytest.raises(ConfigError, match="inside"):
        compress_folder(src, src / "sub")


def test_a_missing_archive_is_named_on_decompress(tmp_path: Path, grads: np.ndarray) -> None:
    src = _model_folder(tmp_path / "model", grads)
    compress_folder(src, tmp_path / "out")
    (tmp_path / "out" / "optim" / "g.npy.lmgc").unlink()
    with pytest.raises(FolderError, match=r"g\.npy\.lmgc"):
        decompress_folder(tmp_path / "out", tmp_path / "back")


def test_cli_compresses_and_restores_a_folder(tmp_path: Path, grads: np.ndarray) -> None:
    src = _model_folder(tmp_path / "model", grads)
    run = lmgc("compress", src, "-o", tmp_path / "out")
    assert "broken.safetensors" in run.stderr  # listed: copied, not coded
    lmgc("decompress", tmp_path / "out", "-o", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)
    (src / "m-1-of-2.safetensors").unlink()
    line = one_error_line(lmgc("compress", src, "-o", tmp_path / "o2", ok=False), 1)
    assert "m-1-of-2.safetensors" in line


def test_a_folder_lmgc_did_not_write_is_refused_on_decompress(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(FolderError, match="not a folder written by"):
        decompress_folder(tmp_path / "plain", tmp_path / "back")


def test_lossy_stages_change_arrays_only_and_are_said(tmp_path: Path, grads: np.ndarray) -> None:
    from lmgc_core.coding.pipeline import Pipeline

    src = _model_folder(tmp_path / "model", grads)
    lossy = Pipeline.from_config({"stages": [{"name": "quantize", "bits": 8}]})
    compress_folder(src, tmp_path / "out", lossy)
    result = decompress_folder(tmp_path / "out", tmp_path / "back")
    assert "m-1-of-2.safetensors" in result.lossy
    back = safetensors.numpy.load_file(tmp_path / "back" / "m-1-of-2.safetensors")
    assert back["a.bias"].shape == (128,)  # the header and layout are the source's
    assert not np.array_equal(back["a.bias"], grads.reshape(64, 128)[0])
    assert (tmp_path / "back" / "config.json").read_bytes() == (src / "config.json").read_bytes()


def test_a_file_named_like_anothers_archive_is_kept_apart(tmp_path: Path, grads: np.ndarray):
    """``a.npy`` next to a user's own ``a.npy.lmgc`` (an older version of it): coding a.npy
    wrote its archive under that name, then the copy of the user's file replaced it, and the
    folder came back with the old a.npy, exit 0. a.npy is now copied as it is."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", grads[:100] * 0)
    lmgc("compress", src / "a.npy")  # the user's m/a.npy.lmgc
    np.save(src / "a.npy", grads[:100])
    result = compress_folder(src, tmp_path / "c")
    assert [rel for rel, _ in result.uncoded] == ["a.npy"]
    decompress_folder(tmp_path / "c", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


def test_a_folder_without_manifest_that_would_write_a_file_twice_is_refused(tmp_path: Path):
    folder = tmp_path / "f"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros(4, np.float32))
    lmgc("compress", folder / "a.npy")  # a.npy.lmgc beside a.npy: which one is a.npy?
    with pytest.raises(FolderError, match="written twice"):
        decompress_folder(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_symbolic_link_loop_is_refused(tmp_path: Path, grads: np.ndarray) -> None:
    """Followed, ``self -> .`` gave every file again at each depth (41 copies of a.npy), and
    two such links an endless walk with growing memory."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", grads[:100])
    (src / "self").symlink_to(".", target_is_directory=True)
    (src / "other").symlink_to(".", target_is_directory=True)
    with pytest.raises(FolderError, match="loop"):
        compress_folder(src, tmp_path / "c")


def test_a_compress_that_fails_part_way_leaves_no_folder(tmp_path: Path) -> None:
    """A damaged base file stopped the compress after its first archive; the folder it left
    (no manifest) then decoded with exit 0 and a file missing."""
    a = np.arange(4096, dtype=np.float32)
    for name in ("new", "old"):
        (tmp_path / name / "sub").mkdir(parents=True)
        safetensors.numpy.save_file({"w": a}, tmp_path / name / "a.safetensors")
        safetensors.numpy.save_file({"w": a}, tmp_path / name / "sub" / "z.safetensors")
    (tmp_path / "old" / "sub" / "z.safetensors").write_bytes(b"garbage, not safetensors")
    args = ("compress", tmp_path / "new", "--base", tmp_path / "old", "-o", tmp_path / "out")
    one_error_line(lmgc(*args, ok=False), 2)
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()  # an output folder that was there keeps what it held
    (tmp_path / "kept" / "mine.txt").write_text("mine")
    args = (*args[:-1], tmp_path / "kept", "--force")
    one_error_line(lmgc(*args, ok=False), 2)
    assert _tree(tmp_path / "kept") == {"mine.txt": b"mine"}


def test_a_file_named_like_a_copys_temporary_file_is_kept(tmp_path: Path) -> None:
    """Copies went through ``.NAME.part``: a file of that very name was replaced, then missing."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / ".config.json.part").write_text("mine")
    np.save(src / "w.npy", np.arange(8, dtype=np.float32))
    compress_folder(src, tmp_path / "c")
    decompress_folder(tmp_path / "c", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


def test_a_failed_run_over_an_earlier_folder_leaves_it_as_it_was(tmp_path: Path) -> None:
    """``compress NEW -o OLD_FOLDER -f`` stopped part-way left new archives beside old ones and
    the old manifest, and the mix decoded with exit 0 (then: a folder marked unfinished);
    ``decompress ... -o EXISTING -f`` left the files it had replaced. Both now put back every
    file they replaced, and leave nothing of their own."""
    a = np.arange(4096, dtype=np.float32)
    for name in ("v1", "v2", "old"):
        (tmp_path / name / "sub").mkdir(parents=True)
        for rel in ("a.safetensors", "sub/z.safetensors"):
            safetensors.numpy.save_file({"w": a + len(name)}, tmp_path / name / rel)
    (tmp_path / "v2" / "extra.txt").write_text("new")
    compress_folder(tmp_path / "v1", tmp_path / "out")
    before = _tree(tmp_path / "out")
    (tmp_path / "old" / "sub" / "z.safetensors").write_bytes(b"damaged base")
    with pytest.raises(ConfigError):
        compress_folder(tmp_path / "v2", tmp_path / "out", force=True, base_dir=tmp_path / "old")
    assert _tree(tmp_path / "out") == before
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        Path(rel).name for rel in [*before, "sub"]
    )
    decompress_folder(tmp_path / "out", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(tmp_path / "v1")

    compress_folder(tmp_path / "v2", tmp_path / "out2")
    archive = tmp_path / "out2" / ("sub/z.safetensors" + SUFFIX)
    archive.write_bytes(archive.read_bytes()[:-40])  # damaged: decoded after a.safetensors
    with pytest.raises(LMGCError):
        decompress_folder(tmp_path / "out2", tmp_path / "back", force=True)
    assert _tree(tmp_path / "back") == _tree(tmp_path / "v1")  # a.safetensors put back
    assert not [p for p in (tmp_path / "back").rglob("*") if p.name.endswith(".kept")]


def test_empty_folders_come_back(tmp_path: Path, grads: np.ndarray) -> None:
    """A training run's empty ``logs/`` or ``runs/2/`` is part of the folder: it was dropped."""
    src = tmp_path / "m"
    (src / "logs").mkdir(parents=True)
    (src / "runs" / "2").mkdir(parents=True)
    np.save(src / "runs" / "g.npy", grads[:100])
    compress_folder(src, tmp_path / "c")
    assert (tmp_path / "c" / "logs").is_dir()
    decompress_folder(tmp_path / "c", tmp_path / "back")
    dirs = sorted(p.relative_to(tmp_path / "back").as_posix()
                  for p in (tmp_path / "back").rglob("*") if p.is_dir())  # fmt: skip
    assert dirs == ["logs", "runs", "runs/2"]
    assert _tree(tmp_path / "back") == _tree(src)


def test_a_manifest_naming_a_file_as_an_empty_folder_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "m"
    (src / "logs").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    compress_folder(src, tmp_path / "c")
    manifest = tmp_path / "c" / FOLDER_MANIFEST
    doc = json.loads(manifest.read_text())
    doc["empty_folders"] = ["config.json"]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(FolderError, match="as a file and as an empty folder"):
        decompress_folder(tmp_path / "c", tmp_path / "back")
    doc["empty_folders"] = ["../escape"]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(FolderError, match="outside the folder"):
        decompress_folder(tmp_path / "c", tmp_path / "back")
    assert not (tmp_path / "back").exists() and not (tmp_path / "escape").exists()


def test_a_folder_larger_than_the_free_space_is_refused_up_front(
    tmp_path: Path, grads: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It filled the disk part way, then failed and removed what it had written."""
    src = _model_folder(tmp_path / "model", grads)
    compress_folder(src, tmp_path / "c")
    need = sum(len(b) for b in _tree(src).values())
    usage = namedtuple("Usage", "total used free")
    asked = []

    def free(path):
        asked.append(str(path))
        return usage(1 << 40, 0, need - 1)

    monkeypatch.setattr(shutil, "disk_usage", free)
    with pytest.raises(DiskSpaceError, match=f"takes {need} bytes"):
        decompress_folder(tmp_path / "c", tmp_path / "new" / "back")
    assert asked == [str(tmp_path)] and not (tmp_path / "new").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 0, need))
    decompress_folder(tmp_path / "c", tmp_path / "back")  # exactly enough is enough
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 0, need - 1))
    with pytest.raises(DiskSpaceError):  # the files it replaces are kept till it ends
        decompress_folder(tmp_path / "c", tmp_path / "back", force=True)
    assert _tree(tmp_path / "back") == _tree(src)


def test_checkpoints_under_other_names_are_coded_and_legacy_ones_listed(tmp_path: Path) -> None:
    """.ckpt and .pth.tar torch.save files were copied uncoded, and a legacy (torch < 1.6)
    pytorch_model.bin copied without a word, though the docs say such files are listed."""
    src = tmp_path / "m"
    src.mkdir()
    torch.save({"w": torch.randn(64, 64)}, src / "last.ckpt")
    torch.save({"w": torch.randn(64, 64)}, src / "weights.pth.tar")
    torch.save({"w": torch.randn(8)}, src / "pytorch_model.bin",
               _use_new_zipfile_serialization=False)  # fmt: skip
    (src / "notes.tar").write_bytes(b"x" * 600)  # not a checkpoint: copied, not listed
    result = compress_folder(src, tmp_path / "c")
    assert sorted(result.coded) == ["last.ckpt", "weights.pth.tar"]
    assert [(p, "legacy torch" in r) for p, r in result.uncoded] == [("pytorch_model.bin", True)]
    decompress_folder(tmp_path / "c", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        ({"empty_folders": ["/".join(["d"] * 1500)] * 5}, "over 256 folders deep"),
        ({"copied": [[[[[[[[[["x"]]]]]]]]]]}, "deeper than 8 levels"),
        # a -f run failed half-way on these (ValueError: embedded null byte) and left the
        # output folder changed; --test said OK
        ({"empty_folders": ["e\x00x"]}, "names a path no file can have"),
        ({"empty_folders": ["\ud800"]}, "names a path no file can have"),
        # a file and an entry under it: --test said OK, decompress failed half-way
        ({"empty_folders": ["config.json/x"]}, "lists config.json as a file and config.json/x"),
    ],
)
def test_a_hostile_folder_manifest_is_refused_at_once(tmp_path: Path, doc, said) -> None:
    """Paths 1,500 folders deep took 25 s (parents walked per parent), then Python's recursion
    limit; deep JSON gave json's RecursionError."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "config.json").write_text("{}")
    compress_folder(src, tmp_path / "c")
    manifest = tmp_path / "c" / FOLDER_MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **doc}))
    with pytest.raises(FolderError, match=said):
        decompress_folder(tmp_path / "c", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_force_touches_only_the_files_it_writes(tmp_path: Path) -> None:
    """The put-back of a failed run moved aside, and a finished run then removed, every name
    the run *could* write: ``compress ../model -o . -f`` in a clone of the model deleted its
    ``a.npy`` (the run writes ``a.npy.lmgc``) and a ``config.json.lmgc`` of the user's."""
    src, out = tmp_path / "m", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    np.save(src / "a.npy", np.arange(64, dtype=np.float32))
    (src / "config.json").write_text("{}")
    (out / "a.npy").write_text("the user's own")
    (out / "config.json.lmgc").write_text("the user's too")
    compress_folder(src, out, force=True)
    assert (out / "a.npy").read_text() == "the user's own"
    assert (out / "config.json.lmgc").read_text() == "the user's too"
    assert not [p for p in out.iterdir() if p.name.endswith(".kept")]


def test_a_folder_that_cannot_be_listed_is_refused(tmp_path: Path) -> None:
    """os.walk swallowed the error: the folder and its files were left out, exit 0 both ways."""
    src = tmp_path / "m"
    (src / "secret").mkdir(parents=True)
    np.save(src / "a.npy", np.ones(8, np.float32))
    np.save(src / "secret" / "w.npy", np.ones(8, np.float32))
    (src / "secret").chmod(0)
    try:
        out = str(tmp_path / "c")
        command = [sys.executable, "-m", "lmgc_core", "compress", str(src), "-o", out]
        if os.geteuid() == 0:  # root lists anything: drop the capabilities that allow it
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv")
            caps = "-dac_override,-dac_read_search"
            command = ["setpriv", "--bounding-set", caps, "--inh-caps", caps, *command]
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        (src / "secret").chmod(0o755)
    assert done.returncode == 1 and "secret: cannot list this folder" in done.stderr, done.stderr
    assert not (tmp_path / "c").exists()


def test_entries_that_are_no_file_are_said_and_listed(tmp_path: Path) -> None:
    """A dangling link (a download that never finished), a FIFO, a socket: dropped without a
    word, so a model folder could come back without its weights and exit 0."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.ones(8, np.float32))
    (src / "model.safetensors").symlink_to(tmp_path / "blobs" / "never-downloaded")
    os.mkfifo(src / "fifo")
    result = lmgc("compress", src, "-o", tmp_path / "c")
    assert "model.safetensors: left out (a symbolic link that cannot be followed" in result.stderr
    assert "fifo: left out (a FIFO" in result.stderr
    doc = json.loads((tmp_path / "c" / FOLDER_MANIFEST).read_text())
    assert [e["path"] for e in doc["skipped"]] == ["fifo", "model.safetensors"]
    decompress_folder(tmp_path / "c", tmp_path / "back")  # old readers ignore the entry
    assert _tree(tmp_path / "back") == _tree(src)


def test_a_manifest_path_in_another_spelling_is_refused(tmp_path: Path) -> None:
    """``./a.npy`` copied beside a coded ``a.npy`` passed the written-twice check: the copy
    replaced the verified decode, exit 0."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.ones(8, np.float32))
    compress_folder(src, tmp_path / "c")
    manifest = tmp_path / "c" / FOLDER_MANIFEST
    doc = json.loads(manifest.read_text())
    for other in ("./a.npy", "a.npy/", "sub//a.npy", "."):
        manifest.write_text(json.dumps({**doc, "copied": [other]}))
        with pytest.raises(FolderError, match="not in its plain form"):
            decompress_folder(tmp_path / "c", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_a_failed_run_keeps_a_dangling_link_it_would_have_replaced(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    for name in ("a", "b"):
        np.save(src / f"{name}.npy", np.ones(4096, np.float32))
    compress_folder(src, tmp_path / "c")
    archive = tmp_path / "c" / "b.npy.lmgc"
    archive.write_bytes(archive.read_bytes()[:-40])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.npy").symlink_to(tmp_path / "nowhere")
    with pytest.raises(LMGCError):
        decompress_folder(tmp_path / "c", tmp_path / "r", force=True)
    assert (tmp_path / "r" / "a.npy").is_symlink() and sorted(os.listdir(tmp_path / "r")) == [
        "a.npy"
    ]


def test_long_names_fit_their_temporary_files(tmp_path: Path) -> None:
    """A temporary name added 15 bytes: a 241-byte name that fits NAME_MAX was refused; a
    name whose archive's name would not fit is copied, said, not a failure of the folder."""
    src = tmp_path / "m"
    src.mkdir()
    long_npy = "a" * 236 + ".npy"  # its archive's name: 245 bytes
    np.save(src / long_npy, np.ones(8, np.float32))
    too_long = "b" * 247 + ".npy"  # 251 bytes: its archive's name would be 256
    np.save(src / too_long, np.ones(8, np.float32))
    (src / ("c" * 245)).write_text("{}")
    result = compress_folder(src, tmp_path / "c")
    assert result.coded == [long_npy]
    assert result.uncoded == [(too_long, "its archive's name would be over 255 bytes")]
    decompress_folder(tmp_path / "c", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


def test_a_run_onto_its_own_inputs(tmp_path: Path) -> None:
    """``compress O/P -o O -f`` wrote P's files over the ones it was reading, and is refused;
    ``decompress C -o C -f`` (in place: each copied file onto itself) works, and so does an
    output folder of links to the input's files (a link is replaced, not what it leads to)."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.ones(8, np.float32))
    (src / "config.json").write_text("{}")
    compress_folder(src, tmp_path / "c")
    decompress_folder(tmp_path / "c", tmp_path / "c" / ".", force=True)
    assert (tmp_path / "c" / "a.npy").read_bytes() == (src / "a.npy").read_bytes()
    assert (tmp_path / "c" / "config.json").read_text() == "{}"
    (tmp_path / "links").mkdir()
    for name in ("a.npy", "config.json"):
        (tmp_path / "links" / name).symlink_to(tmp_path / "c" / name)
    decompress_folder(tmp_path / "c", tmp_path / "links", force=True)
    assert not (tmp_path / "links" / "config.json").is_symlink()
    assert (tmp_path / "c" / "config.json").read_text() == "{}"
    (tmp_path / "o" / "p" / "p").mkdir(parents=True)
    (tmp_path / "o" / "p" / "config.json").write_text("1")
    (tmp_path / "o" / "p" / "p" / "config.json").write_text("2")
    with pytest.raises(ConfigError, match=r"writing p/config\.json there would replace config"):
        compress_folder(tmp_path / "o" / "p", tmp_path / "o", force=True)
    assert (tmp_path / "o" / "p" / "config.json").read_text() == "1"


def test_a_damaged_copied_file_is_refused(tmp_path: Path) -> None:
    """Copied files carried no checksum: a truncated tokenizer.json in the compressed folder
    came back as it was, exit 0, beside files whose hashes were 'verified'."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.ones(8, np.float32))
    (src / "tokenizer.json").write_text('{"vocab": [1, 2, 3]}')
    compress_folder(src, tmp_path / "c")
    doc = json.loads((tmp_path / "c" / FOLDER_MANIFEST).read_text())
    assert set(doc["copied_sha256"]) == {"tokenizer.json"}
    (tmp_path / "c" / "tokenizer.json").write_text('{"vocab": [1, 2')
    with pytest.raises(FolderError, match=r"tokenizer\.json: not the file compress copied"):
        decompress_folder(tmp_path / "c", tmp_path / "back")
    assert not (tmp_path / "back").exists()
    (tmp_path / "c" / "tokenizer.json").write_text('{"vocab": [1, 2, 3]}')
    (tmp_path / "c" / FOLDER_MANIFEST).write_text(json.dumps({**doc, "copied_sha256": {}}))
    with pytest.raises(FolderError, match="copied files without their SHA-256"):
        decompress_folder(tmp_path / "c", tmp_path / "back")
    del doc["copied_sha256"]  # a manifest from before: copies unchecked, as then
    (tmp_path / "c" / FOLDER_MANIFEST).write_text(json.dumps(doc))
    decompress_folder(tmp_path / "c", tmp_path / "back")


def test_an_archive_from_another_folder_is_refused(tmp_path: Path) -> None:
    """Coded files were listed by name only: another valid archive of the same name (a second
    run writing the folder at the same time, a shard copied from another model's folder)
    decoded with exit 0 into a mix of two models."""
    for name, scale in (("m1", 1), ("m2", 2)):
        (tmp_path / name).mkdir()
        for k in range(2):
            np.save(tmp_path / name / f"t{k}.npy", np.full(64, scale * (k + 1), np.float32))
        compress_folder(tmp_path / name, tmp_path / f"{name}-lmgc")
    one, other = tmp_path / "m1-lmgc", tmp_path / "m2-lmgc"
    doc = json.loads((one / FOLDER_MANIFEST).read_text())
    assert set(doc["coded_xxh3_128"]) == {"t0.npy", "t1.npy"}
    shutil.copyfile(other / "t1.npy.lmgc", one / "t1.npy.lmgc")
    with pytest.raises(FolderError, match=r"t1\.npy\.lmgc: not the archive compress wrote"):
        decompress_folder(one, tmp_path / "back")
    assert not (tmp_path / "back").exists()
    line = one_error_line(lmgc("decompress", "--test", one, ok=False), 1)
    assert "not the archive compress wrote" in line
    (one / FOLDER_MANIFEST).write_text(json.dumps({**doc, "coded_xxh3_128": {}}))
    with pytest.raises(FolderError, match="archives without their XXH3-128"):
        decompress_folder(one, tmp_path / "back")
    del doc["coded_xxh3_128"]  # a manifest from before: archives unchecked, as then
    (one / FOLDER_MANIFEST).write_text(json.dumps(doc))
    decompress_folder(one, tmp_path / "back")
    assert np.load(tmp_path / "back" / "t1.npy")[0] == 4  # the other folder's: as it was


def test_links_a_killed_run_left_are_said(tmp_path: Path) -> None:
    """A run killed part way (SIGKILL: nothing can put back) leaves its hidden links to the
    files it replaced; they were never mentioned, and a later compress copied them in."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.ones(8, np.float32))
    compress_folder(src, tmp_path / "c")
    (tmp_path / "back").mkdir()
    (tmp_path / "back" / ".a.npy.k3j9x0qz.kept").write_bytes(b"old bytes")
    result = lmgc("decompress", tmp_path / "c", "-o", tmp_path / "back", "-f")
    assert ".a.npy.k3j9x0qz.kept: left by an interrupted run" in result.stderr
    assert (tmp_path / "back" / ".a.npy.k3j9x0qz.kept").read_bytes() == b"old bytes"


_KILLED_AT_SECOND_FILE = """
import os, signal, sys
from lmgc_core.cli.commands import main
from lmgc_core.files import folders
decoded = []
def decode_path(*args, **kw):
    if decoded:  # the first file is in place: killed where nothing can undo it
        os.kill(os.getpid(), signal.SIGKILL)
    decoded.append(folders.real(*args, **kw))
folders.real, folders._decode_path = folders._decode_path, decode_path
sys.argv[0] = "lmgc"
main()
"""


def test_a_killed_folder_decompress_leaves_its_output_marked(tmp_path: Path) -> None:
    """SIGKILL after the first file left the folder with the others missing and nothing that
    said so: a later run, ``compress`` of it, a user's script took it for a whole one."""
    src = tmp_path / "m"
    src.mkdir()
    for i in range(3):
        np.save(src / f"w{i}.npy", np.arange(100, dtype=np.float32) + i)
    compress_folder(src, tmp_path / "c")
    out = tmp_path / "back"
    command = [sys.executable, "-c", _KILLED_AT_SECOND_FILE, "decompress", str(tmp_path / "c"),
               "-o", str(out)]  # fmt: skip
    killed = subprocess.run(command, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    marks = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert sorted(_tree(out)) == sorted([*marks, "w0.npy"])
    assert len(marks) == 1 and marks[0].endswith(".part")
    said = one_error_line(lmgc("decompress", tmp_path / "c", "-o", out, ok=False), 2)
    assert "did not finish" in said and "files may be missing" in said
    with pytest.raises(FolderError, match="did not finish"):
        compress_folder(out, tmp_path / "again")
    for command in ("info", "ls"):  # what a user asks of the folder first
        said = one_error_line(lmgc(command, out, ok=False), 1)
        assert "did not finish" in said and "files may be missing" in said
    result = lmgc("decompress", tmp_path / "c", "-o", out, "-f", "-q")
    assert f"{marks[0]}: the mark of an `lmgc decompress`" in result.stderr
    assert {k: v for k, v in _tree(out).items() if k != marks[0]} == _tree(src)
    decompress_folder(tmp_path / "c", tmp_path / "whole")  # a run that ends leaves no mark
    assert _tree(tmp_path / "whole") == _tree(src)


def test_the_manifest_takes_the_umasks_mode(tmp_path: Path) -> None:
    """Written through a temporary file (for the put-back's hard links), the manifest took
    that file's 0600; it is as readable as a file the umask lets be."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "config.json").write_text("{}")
    umask = os.umask(0o022)
    try:
        compress_folder(src, tmp_path / "c")
    finally:
        os.umask(umask)
    assert (tmp_path / "c" / FOLDER_MANIFEST).stat().st_mode & 0o777 == 0o644


def test_a_forced_run_does_not_warn_of_its_own_kept_links(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.arange(100, dtype=np.float32))
    (src / "config.json").write_text("{}")
    lmgc("compress", src, "-o", tmp_path / "out", "-q")
    result = lmgc("compress", src, "-o", tmp_path / "out", "-q", "-f")
    assert "warning" not in result.stderr  # the links it made were its own, and are gone
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_a_run_that_fails_at_its_first_write_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.arange(100, dtype=np.float32))

    def full(path, text):  # type: ignore[no-untyped-def]
        raise OSError(27, "File too large")

    monkeypatch.setattr(folders, "_write_manifest", full)
    with pytest.raises(OSError, match="File too large"):
        compress_folder(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_base_folder_without_the_file_says_which(tmp_path: Path) -> None:
    """It said 'give it with --base' although --base had been given."""
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
    np.save(tmp_path / "old" / "b.npy", np.linspace(0, 1, 5000, dtype=np.float32))
    np.save(tmp_path / "new" / "b.npy", np.linspace(0, 1, 5000, dtype=np.float32) + 1e-4)
    compress_folder(tmp_path / "new", tmp_path / "c", base_dir=tmp_path / "old")
    (tmp_path / "old" / "b.npy").rename(tmp_path / "old" / "elsewhere.npy")
    with pytest.raises(ConfigError, match=r"has no file b\.npy, which b\.npy\.lmgc was compressed"):
        decompress_folder(tmp_path / "c", tmp_path / "back", base_dir=tmp_path / "old")


def test_private_subfolders_stay_private(tmp_path: Path) -> None:
    """A 0700 subfolder came back 0755, and the 0644 file in it readable by everyone."""
    src = tmp_path / "m"
    (src / "secret").mkdir(parents=True)
    np.save(src / "secret" / "a.npy", np.ones(8, np.float32))
    (src / "secret" / "notes.txt").write_text("x")
    os.chmod(src / "secret", 0o700)
    compress_folder(src, tmp_path / "c")
    decompress_folder(tmp_path / "c", tmp_path / "back")
    for folder in (tmp_path / "c" / "secret", tmp_path / "back" / "secret"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def _links_folder(tmp_path: Path) -> Path:
    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    np.save(src / "a.npy", np.arange(64, dtype=np.float32))
    np.save(src / "sub" / "b.npy", np.ones(64, dtype=np.float32))
    (src / "config.json").write_text("{}")
    compress_folder(src, tmp_path / "c")
    return tmp_path / "c"


def test_no_file_is_written_through_a_link_inside_the_output(tmp_path: Path) -> None:
    """With --force, a link ``out/sub -> ../outside`` sent ``sub/b.npy`` outside the output
    folder, and a link ``out/a.npy`` to a FIFO got the decoded bytes (a FIFO there hung)."""
    arc, out, outside = _links_folder(tmp_path), tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "sub").symlink_to(outside)
    with pytest.raises(FolderError, match="sub is a link or not a folder"):
        decompress_folder(arc, out, force=True)
    assert list(outside.iterdir()) == [] and (out / "sub").is_symlink()
    (out / "sub").unlink()
    (out / "real").mkdir()
    (out / "sub").symlink_to("real")  # a link to a folder inside the output is followed
    decompress_folder(arc, out, force=True)
    assert (out / "real" / "b.npy").is_file()
    for name in ("sub", "a.npy", "config.json"):
        (out / name).unlink()
    os.mkfifo(outside / "fifo")
    (out / "a.npy").symlink_to(outside / "fifo")
    os.mkfifo(out / "config.json")
    decompress_folder(arc, out, force=True)  # the link and the FIFO replaced, no hang
    assert not (out / "a.npy").is_symlink() and (out / "config.json").is_file()
    assert {k: v for k, v in _tree(out).items() if not k.startswith("real/")} == _tree(
        tmp_path / "m"
    )


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_manifest_that_is_no_regular_file_is_refused(tmp_path: Path, special: str) -> None:
    """A FIFO hung ``--test``; a link to /dev/zero read until memory ran out."""
    manifest = _links_folder(tmp_path) / FOLDER_MANIFEST
    manifest.unlink()
    if special == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.symlink_to(special)
    said = one_error_line(lmgc("decompress", "--test", manifest.parent, ok=False), 1)
    assert "the folder manifest is not a regular file" in said


def test_an_unchecked_copy_is_never_read_through_a_link_out_of_the_folder(tmp_path: Path) -> None:
    """A folder without a manifest (or one from before copies were hashed) copied what its
    links led to: ``home -> ~`` put ``~/.ssh/id_rsa`` into the output, with exit 0."""
    arc = _links_folder(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("key")
    (arc / FOLDER_MANIFEST).unlink()
    (arc / "notes.txt").symlink_to(secret)
    with pytest.raises(FolderError, match=r"leads out of .* no SHA-256 of it is recorded"):
        decompress_folder(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (arc / "notes.txt").unlink()
    (arc / "notes.txt").write_text("inside")  # inside the folder: copied, and said unchecked
    err = lmgc("decompress", arc, "-o", tmp_path / "out").stderr
    assert "notes.txt: a copied file read but not checked" in err


def test_a_folder_says_what_coding_its_files_noted(tmp_path: Path) -> None:
    """``lmgc compress FILE`` warns of a pickle's unsafe global; a folder holding that file
    said nothing (compress_stream dropped its notes)."""

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    torch.save({"w": torch.ones(4), "x": Evil()}, src / "sub" / "ckpt.pt")
    err = lmgc("compress", src, "-o", tmp_path / "c").stderr
    assert "warning: sub/ckpt.pt: data.pkl asks for posix.system" in err
    decompress_folder(tmp_path / "c", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


def test_a_folder_over_the_manifest_caps_is_refused_by_compress(tmp_path: Path, monkeypatch):
    """compress wrote manifests over the caps decompress reads (2.2 million files against
    2^22 values) and exited 0: an archive no command could read back."""
    src = tmp_path / "m"
    src.mkdir()
    for k in range(6):
        (src / f"f{k}.txt").write_text(str(k))
    monkeypatch.setattr(folders, "MAX_MANIFEST_VALUES", 12)
    with pytest.raises(FolderError, match="too many files for one folder archive"):
        compress_folder(src, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_folder_options_take_effect_or_are_refused(tmp_path: Path) -> None:
    """On a folder, --chunk-size, --dtype and --format (both ways) were accepted and silently
    ignored: the archives were the default ones, and a decompress --format did not convert."""
    src = tmp_path / "m"
    src.mkdir()
    np.save(src / "a.npy", np.arange(5000, dtype=np.float32))
    lmgc("compress", src, "-o", tmp_path / "c", "--chunk-size", "1024")
    info = json.loads(lmgc("info", "--json", tmp_path / "c" / "a.npy.lmgc").stdout)
    assert info["totals"]["streams"] == 20  # 20,000 bytes in streams of 1,024
    for option in (("--dtype", "int8"), ("--format", "raw")):
        said = one_error_line(lmgc("compress", src, "-o", tmp_path / "d", *option, ok=False), 2)
        assert "apply to a file" in said
    said = one_error_line(
        lmgc("decompress", tmp_path / "c", "-o", tmp_path / "e", "--format", "npz", ok=False), 2
    )
    assert "--format applies to an archive of a file, not a folder" in said
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
    lmgc("decompress", tmp_path / "c", "-o", tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(src)


def test_info_and_ls_describe_a_compressed_folder(tmp_path: Path) -> None:
    """``lmgc info``/``ls`` of the folder ``lmgc compress`` wrote said "is a directory": each
    archive's tensors are listed under its file's name, the copied files and the empty
    folders too, and a damaged or missing archive fails the command."""
    src = tmp_path / "m"
    (src / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    np.save(src / "w.npy", np.linspace(-1, 1, 300, dtype=np.float32))
    tensors = {"a": np.ones((4, 5), np.float32), "b": np.arange(7, dtype=np.float64)}
    safetensors.numpy.save_file(tensors, str(src / "sub" / "t.safetensors"))
    (src / "config.json").write_text('{"layers": 2}')
    lmgc("compress", src, "-o", tmp_path / "c", "-q")
    rows = [line.split() for line in lmgc("ls", tmp_path / "c").stdout.splitlines()]
    by_name = {r[0]: r[1:] for r in rows[1:]}
    names = [r[0] for r in rows[1:]]  # the manifest's order
    assert names[0] == "w.npy" and names[3:] == ["config.json", "total"]
    assert set(by_name) == {"w.npy", "sub/t.safetensors:a", "sub/t.safetensors:b", "config.json",
                            "total"}  # fmt: skip
    assert by_name["w.npy"][1:3] == ["(300,)", "1200"]
    assert by_name["sub/t.safetensors:b"][:2] == ["<f8", "(7,)"]
    assert by_name["config.json"][:4] == ["copied", "13", "13", "100.00%"]
    folder_bytes = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    manifest = (tmp_path / "c" / FOLDER_MANIFEST).stat().st_size
    assert int(rows[-1][-2]) == folder_bytes - manifest  # the archives and the copies
    doc = json.loads(lmgc("info", tmp_path / "c", "--json").stdout)
    assert sorted(doc["coded"]) == ["sub/t.safetensors", "w.npy"]
    assert doc["copied"] == {"config.json": 13} and doc["empty_folders"] == ["empty"]
    original = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert doc["totals"]["original_bytes"] == original
    text = lmgc("info", tmp_path / "c").stdout
    assert "lmgc folder of 2 archives and 1 files copied" in text
    assert "w.npy.lmgc: lmgc" in text and "empty/: an empty folder" in text
    archive = tmp_path / "c" / "w.npy.lmgc"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x10
    archive.write_bytes(bytes(data))
    for command in ("info", "ls"):
        assert "w.npy.lmgc" in one_error_line(lmgc(command, tmp_path / "c", ok=False), 1)
    archive.unlink()
    for command in ("info", "ls"):
        assert "missing: w.npy.lmgc" in one_error_line(lmgc(command, tmp_path / "c", ok=False), 1)
