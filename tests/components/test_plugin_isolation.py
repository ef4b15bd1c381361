"""A broken third-party plugin breaks only itself: real pip-installed packages whose import
raises, whose hooks raise, that clash on names or import undeclared modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import same_bits
from tests.paths import ROOT_DIR
from tests.plugin_packages import pip_install, run_with, write_package

DOCS_EXAMPLES = ROOT_DIR / "docs" / "examples"

BROKEN_IMPORT = """
raise ImportError("lmgc_broken: simulated import failure")
"""

HOOK_FAILS = """
from lmgc_core.components.hookspecs import hookimpl
from lmgc_basic_priors.uniform import UniformPrior


class HalfDone(UniformPrior):
    name = "half-done"


@hookimpl
def register_priors(register):
    register("half-done", HalfDone)
    raise RuntimeError("simulated hook failure")


@hookimpl
def register_commands(cli):
    raise ValueError("no commands today")
"""

LAZY_AND_CLASHES = """
from lmgc_core.components.hookspecs import hookimpl
from lmgc_basic_priors.uniform import UniformPrior


def lazy(**options):
    import lmgc_not_installed_anywhere  # not declared in requires=

    return UniformPrior()


@hookimpl
def register_priors(register):
    register("lazy", lazy)
    register("adaptive", UniformPrior)  # lmgc's own name: this one must be ignored


@hookimpl
def register_stages(register):
    register("shared-name", lambda: None)
"""

CLASH_TWO = """
from lmgc_core.components.hookspecs import hookimpl
from tests.paths import ROOT_DIR


@hookimpl
def register_stages(register):
    register("shared-name", lambda: None)


@hookimpl
def register_commands(cli):
    cli.command("compress", help="HIJACKED compress")(lambda: None)
"""


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    packages = [
        write_package(src / "a", "lmgc-broken", "0.1.0", {"lmgc_broken": BROKEN_IMPORT}),
        write_package(
            src / "b",
            "lmgc-quirks",
            "0.3.0",
            {"lmgc_quirks_hook": HOOK_FAILS, "lmgc_quirks_lazy": LAZY_AND_CLASHES},
        ),
        write_package(src / "c", "lmgc-quirks-two", "0.1.0", {"lmgc_quirks_two": CLASH_TWO}),
    ]
    return pip_install(tmp_path_factory.mktemp("site"), *packages)


def _line(text: str, needle: str) -> str:
    hits = [line for line in text.splitlines() if needle in line]
    assert hits, f"{needle!r} not in:\n{text}"
    return hits[0]


def test_plugins_lists_each_broken_plugin_with_its_reason(broken_site):
    proc = run_with(broken_site, "plugins")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    broken = _line(out, "lmgc-broken 0.1.0")
    assert "broken: import of 'lmgc_broken' failed: ImportError: lmgc_broken: simulated" in broken
    assert "broken: register_priors failed: RuntimeError: simulated hook failure" in _line(
        out, "half-done"
    )
    assert "registered 2 times" in _line(out, "shared-name")
    notes = _line(out, "plugin                    lmgc-quirks 0.3.0")  # one line per plugin
    assert "its prior 'adaptive' is ignored: lmgc has its own" in notes
    assert "register_commands failed: ValueError: no commands today" in notes
    assert "ok" in _line(out, "adaptive       lmgc 0.1.0")  # the built-in keeps its name
    two = _line(out, "plugin                    lmgc-quirks-two 0.1.0")
    assert "its command 'compress' is ignored" in two  # --help listed it, compress ran lmgc's
    assert "HIJACKED" not in run_with(broken_site, "--help").stdout
    listing = json.loads(run_with(broken_site, "plugins", "--json").stdout)
    by_plugin = {e["plugin"]: e for e in listing if e["kind"] == "plugin"}
    assert "simulated import failure" in by_plugin["lmgc-broken 0.1.0"]["broken"]
    half = next(e for e in listing if e.get("name") == "half-done")
    assert half["available"] is False and "simulated hook failure" in half["broken"]


def test_everything_else_keeps_working(broken_site, tmp_path, grads):
    np.save(tmp_path / "x.npy", grads[:500])
    made = run_with(broken_site, "compress", str(tmp_path / "x.npy"), "--prior", "adaptive")
    assert made.returncode == 0, made.stderr
    back = run_with(
        broken_site, "decompress", str(tmp_path / "x.npy.lmgc"), "-o", str(tmp_path / "y.npy")
    )
    assert back.returncode == 0, back.stderr
    assert same_bits(np.load(tmp_path / "y.npy"), grads[:500])
    code = (
        "import numcodecs, numpy as np\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "codec = numcodecs.get_codec({'id': 'lmgc', 'prior': 'adaptive'})\n"
        "y = codec.decode(codec.encode(x))\n"
        "assert y.tobytes() == x.tobytes() and y.dtype == x.dtype\n"
        "print('codec ok')\n"
    )
    proc = run_with(broken_site, code=code)
    assert proc.returncode == 0 and "codec ok" in proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--prior", "laplace"), "failed to load, one may provide it: lmgc-broken 0.1.0 (import"),
        (("--prior", "half-done"), "(from lmgc-quirks 0.3.0) is broken: register_priors failed"),
        (("--prior", "lazy"), "failed to import lmgc_not_installed_anywhere"),
        (("--stage", "shared-name"), "registered 2 times (lmgc-quirks 0.3.0 and lmgc-quirks-two"),
    ],
)
def test_using_a_broken_component_fails_with_its_plugin_and_reason(
    broken_site, tmp_path, grads, args, expected
):
    np.save(tmp_path / "x.npy", grads[:50])
    proc = run_with(broken_site, "compress", str(tmp_path / "x.npy"), *args)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert expected in proc.stderr, proc.stderr
    if args[1] == "lazy":
        assert "should list it in requires=" in proc.stderr


def test_a_plugin_that_prints_does_not_write_into_piped_data(tmp_path_factory, tmp_path, grads):
    """A plugin's "loaded" line at import began the output of ``decompress X -o -`` (any
    archive, exit 0, "identical"): plugin code run while plugins load prints to stderr."""
    chatty = 'print("lmgc-chatty loaded")\n'
    package = write_package(tmp_path_factory.mktemp("chatty"), "lmgc-chatty", "0.1.0",
                            {"lmgc_chatty": chatty})  # fmt: skip
    site = pip_install(tmp_path_factory.mktemp("site-chatty"), package)
    np.save(tmp_path / "x.npy", grads[:500])
    assert run_with(site, "compress", str(tmp_path / "x.npy"), "-q").returncode == 0
    piped = run_with(site, "decompress", str(tmp_path / "x.npy.lmgc"), "-o", "-", text=False)
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "x.npy").read_bytes()
    assert b"lmgc-chatty loaded" in piped.stderr


# ---------------------------------------------------------------- plugin versions in streams

CHANGED_MATHS = ("-self.scale * np.arange", "-2 * self.scale * np.arange")


@pytest.fixture(scope="module")
def laplace_sites(tmp_path_factory) -> tuple[Path, Path]:
    """lmgc-laplace 0.1.0 (the docs example) and 0.2.0, whose maths changed but whose
    fingerprint did not (the plugin author forgot the version bump)."""
    source = (DOCS_EXAMPLES / "laplace_prior.py").read_text()
    assert CHANGED_MATHS[0] in source
    src = tmp_path_factory.mktemp("laplace")
    old = write_package(src / "old", "lmgc-laplace", "0.1.0", {"laplace_prior": source})
    new = write_package(
        src / "new", "lmgc-laplace", "0.2.0", {"laplace_prior": source.replace(*CHANGED_MATHS)}
    )
    return (
        pip_install(tmp_path_factory.mktemp("site-old"), old),
        pip_install(tmp_path_factory.mktemp("site-new"), new),
    )


def test_a_stream_decoded_with_another_plugin_version_names_both(laplace_sites, tmp_path, grads):
    old, new = laplace_sites
    # top-10% sparsified gradients: mostly "0" digits, which the Laplace prior codes in ~1.4 bits
    # (on dense gradients it expands them, and their stream stores the data raw: nothing of the
    # prior's maths is then needed to decode it)
    sparse = grads[:300].copy()
    sparse[np.argsort(np.abs(sparse))[:270]] = 0
    np.save(tmp_path / "x.npy", sparse)
    made = run_with(old, "compress", str(tmp_path / "x.npy"), "--prior", "laplace")
    assert made.returncode == 0, made.stderr
    info = run_with(old, "info", "--json", str(tmp_path / "x.npy.lmgc"))
    header = json.loads(info.stdout)["members"][0]["streams"][0]["header"]
    assert "coding" not in header["parts"][0]  # coded by the prior, not stored
    made_by = header["made_by"]
    assert made_by["prior"] == "lmgc-laplace 0.1.0" and made_by["coder"].startswith("lmgc ")

    same = run_with(old, "decompress", str(tmp_path / "x.npy.lmgc"), "-o", str(tmp_path / "a.npy"))
    assert same.returncode == 0, same.stderr
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "x.npy").read_bytes()
    other = run_with(new, "decompress", str(tmp_path / "x.npy.lmgc"), "-o", str(tmp_path / "b.npy"))
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "prior 'laplace': lmgc-laplace 0.1.0 made it, lmgc-laplace 0.2.0 decodes it" in (
        other.stderr
    )
    assert "without a change of fingerprint" in other.stderr
    assert not (tmp_path / "b.npy").exists()


def test_the_library_leaves_the_programs_stdout_alone(tmp_path):
    """Plugins loaded by several threads at once swapped sys.stdout to stderr and back out of
    order: the program's own prints went to stderr for good (stdout is guarded only in the
    lmgc command, where it may be the data)."""
    code = (
        "import numpy as np, lmgc_core\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"blob = open({str(tmp_path / 's.bin')!r}, 'rb').read()\n"
        "with ThreadPoolExecutor(8) as ex:\n"
        "    outs = list(ex.map(lambda _: lmgc_core.decompress(blob), range(8)))\n"
        "print('decoded', all((o == np.arange(1024, dtype='f4')).all() for o in outs))\n"
    )
    import lmgc_core

    (tmp_path / "s.bin").write_bytes(lmgc_core.compress(np.arange(1024, dtype="f4")))
    for _ in range(3):
        proc = run_with(None, code=code)
        assert proc.returncode == 0 and proc.stdout.strip() == "decoded True", proc.stderr
