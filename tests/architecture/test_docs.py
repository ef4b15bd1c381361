"""Docs that cannot drift: every fenced code block in README.md and docs/*.md runs here.

Per file, in order, in one temporary folder that holds ``grads.npy`` (the 8,192 real float32
gradients of ``tests/data/mlp_grads_8k.npy``):

* ``python`` blocks run in one shared namespace (later blocks see earlier names);
* ``bash``/``sh`` blocks run with ``bash -euo pipefail``;
* ``console`` blocks run each ``$ command`` and compare its output (stdout and stderr) with the
  lines shown below it, exactly (a line ``...`` stands for any number of lines);
* ``yaml``/``toml``/``json`` blocks must parse; one whose first line is ``# NAME.ext`` (or that
  follows ``<!-- file: NAME -->``) is written to that file for later blocks;
* ``text`` blocks are prose (diagrams, layouts) and do not run.

A block that cannot run here is preceded by ``<!-- not-run: REASON -->``; one that needs the
real language model by ``<!-- lm: REASON -->`` (run by the ``lm``-marked test only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import yaml

from tests.paths import ROOT_DIR

ROOT = ROOT_DIR
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PENDING = {
    "plugins.md": "owned by the plugin-author docs work; its blocks get markers there first",
}
LANGS = {"python", "bash", "sh", "console", "yaml", "toml", "json", "text"}
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(not-run|lm|file)\s*:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    markers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        markers, j = {}, i - 1
        while j >= 0 and (MARKER.match(lines[j]) or not lines[j].strip()):
            found = MARKER.match(lines[j])
            if found:
                markers.setdefault(found.group(1), found.group(2))
            j -= 1
        indent, end = len(fence.group(1)), i + 1
        while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        body = "\n".join(line[indent:] for line in lines[i + 1 : end])
        out.append(Block(path, i + 1, fence.group(2), body + "\n", markers))
        i = end + 1
    return out


def _files() -> list[Path]:
    return [p for p in FILES if p.name not in PENDING]


def test_every_block_is_tagged_and_every_skip_says_why():
    for path in FILES:
        for block in blocks(path):
            if path.name in PENDING:
                continue
            assert block.lang in LANGS, f"{block.where}: tag the block ({sorted(LANGS)})"
            for key in ("not-run", "lm"):
                if key in block.markers:
                    assert len(block.markers[key]) > 8, f"{block.where}: say why ({key})"


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    shutil.copy(ROOT / "tests" / "data" / "mlp_grads_8k.npy", tmp_path / "grads.npy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("COLUMNS", "100")
    return tmp_path


def _run_console(block: Block, folder: Path) -> None:
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise AssertionError(f"{block.where}: console text before a '$ ' command")
        command = lines[i][2:]
        i += 1
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", command)
        if heredoc:
            while i < len(lines) and lines[i] != heredoc.group(1):
                command += "\n" + lines[i]
                i += 1
            command += "\n" + heredoc.group(1)
            i += 1
        while command.endswith("\\") and i < len(lines):
            command += "\n" + lines[i]
            i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        got = [line.rstrip() for line in proc.stdout.splitlines()]
        assert _matches([e.rstrip() for e in expected], got), (
            f"{block.where}: `{command}` printed\n" + "\n".join(got) + "\nexpected\n"
            + "\n".join(expected)
        )  # fmt: skip


def _matches(expected: list[str], got: list[str]) -> bool:
    if not expected:
        return not got
    if expected[0] == "...":
        return any(_matches(expected[1:], got[k:]) for k in range(len(got) + 1))
    return bool(got) and got[0] == expected[0] and _matches(expected[1:], got[1:])


def _run_data(block: Block, folder: Path) -> None:
    first = block.text.splitlines()[0] if block.text.strip() else ""
    name = block.markers.get("file")
    if not name and re.match(r"^#\s*[\w.-]+\.(yaml|yml|toml)\s*$", first):
        name = first.lstrip("#").strip()
    try:
        if block.lang == "yaml":
            yaml.safe_load(block.text)
        elif block.lang == "toml":
            tomllib.loads(block.text)
        else:
            json.loads(block.text)
    except Exception as exc:
        raise AssertionError(f"{block.where}: not valid {block.lang}: {exc}") from None
    if name:
        (folder / name).write_text(block.text)


def run_file(path: Path, folder: Path, with_lm: bool) -> int:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    ran = 0
    for block in blocks(path):
        if block.lang == "text" or "not-run" in block.markers:
            continue
        if "lm" in block.markers and not with_lm:
            continue
        if block.lang == "python":
            exec(compile(block.text, block.where, "exec"), namespace)
        elif block.lang in ("bash", "sh"):
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.text],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=1200 if "lm" in block.markers else 300,
            )
            assert proc.returncode == 0, f"{block.where}: {proc.stderr[-2000:]}"
        elif block.lang == "console":
            _run_console(block, folder)
        else:
            _run_data(block, folder)
        ran += 1
    return ran


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_doc_examples_run(path, folder):
    run_file(path, folder, with_lm=False)


@pytest.mark.lm
@pytest.mark.parametrize(
    "path",
    [p for p in _files() if any("lm" in b.markers for b in blocks(p))],
    ids=lambda p: p.name,
)
def test_doc_examples_with_the_language_model_run(path, folder):
    assert run_file(path, folder, with_lm=True) > 0
