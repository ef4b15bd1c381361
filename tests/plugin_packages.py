"""Real plugin packages for the tests: written to disk, pip-installed into a separate target
folder (a real wheel build), and used from subprocesses that have that folder on their path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def write_package(root: Path, dist: str, version: str, modules: dict[str, str]) -> Path:
    """A source tree for distribution ``dist`` whose ``modules`` (name -> source) are each an
    ``lmgc`` entry point named after the module."""
    root.mkdir(parents=True, exist_ok=True)
    entry_points = "\n".join(f'{m} = "{m}"' for m in modules)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "{version}"

            [project.entry-points.lmgc]
            {{entry_points}}

            [tool.setuptools]
            py-modules = {sorted(modules)!r}
            """
        ).replace("{entry_points}", entry_points)
    )
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    return root


def pip_install(target: Path, *sources: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            *map(str, sources),
        ],
        check=True,
        timeout=300,
    )
    return target


def run_with(
    site: Path | None, *args: str, code: str | None = None, text: bool = True
) -> subprocess.CompletedProcess:
    """``lmgc ARGS`` (or ``python -c CODE``) in a fresh interpreter with ``site`` on its path
    (``text=False``: its output as bytes)."""
    paths = [str(site)] if site else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    command = ["-c", code] if code is not None else ["-m", "lmgc_core.cli.commands", *args]
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=text, env=env, timeout=300
    )
