"""``lmgc compress --series F1 F2 ...`` and ``lmgc decompress F1.lmgc F2.lmgc ...`` (issue 21):
each checkpoint coded against the one before it (a full one every ``--keyframe K`` files), and
each decoded file used as the next one's base when its archive names it. Real checkpoint files
of a real SGD run, the real coder, byte-identical round trips, clear refusals."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmgc_core.files.archive import ArchiveReader
from tests.cli_helpers import lmgc, one_error_line
from tests.sgd_mlp import sgd_snapshots

FORMATS = ("safetensors", "npz", "npy")


def sgd_checkpoints(steps: int = 4, every: int = 10, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """The weights of an MLP trained by SGD on scikit-learn's handwritten digits, every
    ``every`` steps: a real checkpoint series."""
    return [{"fc1.weight": w1, "fc2.weight": w2} for w1, w2 in sgd_snapshots(steps, every, seed)]


def write(path: Path, tensors: dict[str, np.ndarray], fmt: str) -> Path:
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(tensors, str(path))
    elif fmt == "npz":
        np.savez(path, **tensors)
    else:
        np.save(path, tensors["fc1.weight"])
    return path


@pytest.fixture(scope="module")
def checkpoints() -> list[dict[str, np.ndarray]]:
    return sgd_checkpoints(6)


def make_series(tmp: Path, checkpoints, fmt: str, n: int = 4) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    return [write(tmp / f"step{i}.{fmt}", checkpoints[i], fmt) for i in range(n)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_of(path: Path) -> str | None:
    """The base file an archive names (``None``: coded alone)."""
    with open(path, "rb") as f:
        base = ArchiveReader(f, str(path)).base
    return None if base is None else base["name"]


def archived(files: list[Path]) -> list[Path]:
    return [f.with_name(f.name + ".lmgc") for f in files]


def move_away(files: list[Path], where: Path) -> dict[Path, str]:
    """The sources moved out of the way (decompression writes them back); their SHA-256."""
    where.mkdir()
    digests = {f: sha(f) for f in files}
    for f in files:
        shutil.move(f, where / f.name)
    return digests


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_series_round_trip_in_order(tmp_path, checkpoints, fmt):
    files = make_series(tmp_path / "run", checkpoints, fmt)
    lmgc("compress", "-q", "--series", *files)
    lmgcs = archived(files)
    assert all(f.exists() for f in lmgcs)
    assert base_of(lmgcs[0]) is None
    assert [base_of(f) for f in lmgcs[1:]] == [f.name for f in files[:-1]]
    digests = move_away(files, tmp_path / "sources")
    lmgc("decompress", "-q", *lmgcs)
    assert {f: sha(f) for f in files} == digests


def test_series_is_smaller_than_each_file_alone(tmp_path, checkpoints):
    files = make_series(tmp_path / "run", checkpoints, "safetensors", 6)
    lmgc("compress", "-q", *files)  # several inputs, no --series: each alone
    alone = [f.stat().st_size for f in archived(files)]
    assert all(base_of(f) is None for f in archived(files))
    lmgc("compress", "-q", "-f", "--series", *files)
    chained = [f.stat().st_size for f in archived(files)]
    assert chained[0] == alone[0]
    assert sum(chained[1:]) < 0.85 * sum(alone[1:]), (chained, alone)


def test_keyframes_bound_the_chain(tmp_path, checkpoints):
    files = make_series(tmp_path / "run", checkpoints, "safetensors", 5)
    lmgc("compress", "-q", "--series", "--keyframe", "2", *files)
    lmgcs = archived(files)
    names = [f.name for f in files]
    assert [base_of(f) for f in lmgcs] == [None, names[0], None, names[2], None]
    digests = move_away(files, tmp_path / "sources")
    lmgc("decompress", "-q", lmgcs[2], lmgcs[3])  # random access: from the keyframe before
    assert sha(files[3]) == digests[files[3]] and not files[1].exists()
    lmgc("decompress", "-q", lmgcs[4])  # a keyframe alone
    assert sha(files[4]) == digests[files[4]]


def test_an_explicit_base_starts_the_chain(tmp_path, checkpoints):
    files = make_series(tmp_path / "run", checkpoints, "npz", 3)
    lmgc("compress", "-q", "--series", "--base", files[0], files[1], files[2])
    assert [base_of(f) for f in archived(files[1:])] == [files[0].name, files[1].name]
    digests = move_away(files[1:], tmp_path / "sources")
    lmgc("decompress", "-q", "--base", files[0], *archived(files[1:]))
    assert sha(files[2]) == digests[files[2]]


# -- refusals ----------------------------------------------------------------------------------


def test_a_missing_base_is_refused_by_name_before_anything_is_written(tmp_path, checkpoints):
    files = make_series(tmp_path / "run", checkpoints, "safetensors", 3)
    lmgc("compress", "-q", "--series", *files)
    lmgcs = archived(files)
    move_away(files, tmp_path / "sources")
    line = one_error_line(lmgc("decompress", lmgcs[2], ok=False), 2)
    assert files[1].name in line and "--base" in line
    assert not files[2].exists()
    # out of order: the base is decoded after the file that needs it
    line = one_error_line(lmgc("decompress", lmgcs[1], lmgcs[0], ok=False), 2)
    assert files[0].name in line and "before it" in line
    assert not files[1].exists() and not files[0].exists()  # checked before anything is written


def test_an_out_of_order_list_with_a_base_is_refused_before_anything_is_written(
    tmp_path, checkpoints
):
    """With --base given, a list out of order wrote its first files, then failed, blaming
    --base."""
    files = make_series(tmp_path / "run", checkpoints, "npz", 4)
    lmgc("compress", "-q", "--series", *files)
    lmgcs = archived(files)
    move_away(files[1:], tmp_path / "sources")
    result = lmgc("decompress", "--base", files[0], lmgcs[1], lmgcs[3], lmgcs[2], ok=False)
    line = one_error_line(result, 2)
    assert files[2].name in line and "before it" in line
    assert not files[1].exists()  # checked before anything is written
    backup = tmp_path / "backup-of-the-first"  # the right base under another name: used
    shutil.copyfile(files[0], backup)
    lmgc("decompress", "-q", "--base", backup, lmgcs[2], lmgcs[1], ok=False)  # out of order
    assert not files[1].exists()
    lmgc("decompress", "-q", "--base", backup, lmgcs[1], lmgcs[2])
    assert files[2].exists()


def test_a_wrong_base_for_a_later_archive_is_refused_before_the_first_is_written(
    tmp_path, checkpoints
):
    """An archive coded alone, then one coded against a file the run does not rebuild, with
    the wrong --base: the first was written, then the second's own check refused the base."""
    files = make_series(tmp_path / "run", checkpoints, "npz", 3)
    lmgc("compress", "-q", files[0])
    lmgc("compress", "-q", files[2], "--base", files[1])
    wrong = tmp_path / "wrong.npz"
    shutil.copyfile(files[0], wrong)
    lmgcs = archived(files)
    digests = move_away([files[0], files[2]], tmp_path / "sources")
    line = one_error_line(lmgc("decompress", lmgcs[0], lmgcs[2], "--base", wrong, ok=False), 2)
    assert str(wrong) in line and lmgcs[2].name in line and files[1].name in line
    assert not files[0].exists() and not files[2].exists()
    lmgc("decompress", "-q", lmgcs[0], lmgcs[2], "--base", files[1])
    assert sha(files[0]) == digests[files[0]] and sha(files[2]) == digests[files[2]]


def test_a_decoded_file_that_is_not_the_base_is_not_used(tmp_path, checkpoints):
    """Two series whose files share names: the second's archive names a base of the same name
    as the first's decoded file, but another SHA-256."""
    a = make_series(tmp_path / "a", checkpoints, "npz", 2)
    b = make_series(tmp_path / "b", checkpoints[2:], "npz", 2)
    lmgc("compress", "-q", "--series", *a)
    lmgc("compress", "-q", "--series", *b)
    move_away(a, tmp_path / "a-src")
    move_away(b, tmp_path / "b-src")
    line = one_error_line(lmgc("decompress", archived(a)[0], archived(b)[1], ok=False), 2)
    assert b[0].name in line
    assert not a[0].exists() and not b[1].exists()  # refused before anything is written


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keyframe", "2"], "--keyframe"),
        (["--series", "-o", "out.lmgc"], "-o"),
        (["-o", "out.lmgc"], "-o"),
        (["--series", "--keyframe", "0"], "keyframe"),
        (["-"], "stdin"),
        (["--series", "."], "folders"),
    ],
)
def test_bad_series_options_are_usage_errors(tmp_path, checkpoints, args, message, monkeypatch):
    files = make_series(tmp_path / "run", checkpoints, "npz", 2)
    monkeypatch.chdir(tmp_path)
    line = one_error_line(lmgc("compress", *args, *files, ok=False), 2)
    assert message in line
    assert not any(f.exists() for f in archived(files))


def test_decompress_several_with_one_output_is_a_usage_error(tmp_path, checkpoints):
    files = make_series(tmp_path / "run", checkpoints, "npz", 2)
    lmgc("compress", "-q", "--series", *files)
    line = one_error_line(lmgc("decompress", "-o", tmp_path / "x.npz", *archived(files),
                               ok=False), 2)  # fmt: skip
    assert "-o" in line


def test_format_with_a_series_and_an_archive_listed_twice_write_nothing(tmp_path, checkpoints):
    """``--format npz`` over a chain converted step 0 (under its .npy name), then refused step 1
    for a base no one gave; an archive listed twice wrote the outputs before it was refused."""
    files = make_series(tmp_path / "run", checkpoints, "npy", 3)
    lmgc("compress", "-q", "--series", *files)
    lmgcs = archived(files)
    move_away(files, tmp_path / "sources")
    line = one_error_line(lmgc("decompress", "--format", "npz", *lmgcs, ok=False), 2)
    assert "--format with a series" in line
    twice = [lmgcs[0], lmgcs[1], lmgcs[1], lmgcs[2]]
    assert "listed twice" in one_error_line(lmgc("decompress", *twice, ok=False), 2)
    assert not any(f.exists() for f in files)


def test_two_earlier_archives_of_the_base_name_are_not_guessed_between(tmp_path):
    """Compact archives (one small .npy) record no file hash, so the base was matched by name
    alone: the later of two x.npy archives was taken, files were written, then refused."""
    rng = np.random.default_rng(0)
    for folder in "ABC":
        (tmp_path / folder).mkdir()
    a = rng.standard_normal(30000).astype(np.float32)
    np.save(tmp_path / "A" / "x.npy", a)
    np.save(tmp_path / "B" / "x.npy", rng.standard_normal(30000).astype(np.float32))
    np.save(tmp_path / "C" / "y.npy", a * np.float32(1.001))
    lmgc("compress", "-q", tmp_path / "A" / "x.npy", tmp_path / "B" / "x.npy")
    lmgc("compress", "-q", tmp_path / "C" / "y.npy", "--base", tmp_path / "A" / "x.npy")
    for path in ("A/x.npy", "B/x.npy", "C/y.npy"):
        (tmp_path / path).unlink()
    archives = [tmp_path / p for p in ("A/x.npy.lmgc", "B/x.npy.lmgc", "C/y.npy.lmgc")]
    line = one_error_line(lmgc("decompress", *archives, ok=False), 2)
    assert "both decompress to a file of that name" in line
    assert not (tmp_path / "A" / "x.npy").exists()  # refused before anything is written
    lmgc("decompress", "-q", archives[0], archives[2])
    assert np.load(tmp_path / "C" / "y.npy").tobytes() == (a * np.float32(1.001)).tobytes()
