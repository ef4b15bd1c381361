"""Plugin discovery through the real pluggy manager and real entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmgc_core import PluginError
from lmgc_core.components import registry
from tests.conftest import same_bits
from tests.paths import TESTS_DIR
from tests.plugin_packages import pip_install

EXAMPLE = TESTS_DIR / "example_plugin"


def test_builtins_are_registered_through_entry_points():
    regs = registry.registrations()
    for kind, name in [
        ("serializer", "hex"),
        ("serializer", "iso"),
        ("prior", "uniform"),
        ("prior", "adaptive"),
        ("coder", "range"),
    ]:
        assert (kind, name) in regs
        assert regs[(kind, name)].plugin.startswith("lmgc ")  # the distribution, via entry points


def test_unknown_names_list_what_is_available():
    with pytest.raises(PluginError, match=r"available priors: .*adaptive"):
        registry.build("prior", "nope")


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example plugin pip-installed (a real wheel build) into a separate target folder."""
    target = tmp_path_factory.mktemp("site")
    return pip_install(target, EXAMPLE)


def _lmgc(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "lmgc_core.cli.commands", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_third_party_plugin_is_discovered_listed_and_used(example_site, tmp_path, grads):
    listing = _lmgc(example_site, "plugins")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    ok = [line for line in lines if "zeros-favoured" in line]
    missing = [line for line in lines if "needs-missing" in line]
    assert ok and "lmgc-example-plugin" in ok[0] and ok[0].rstrip().endswith("ok")
    assert (
        missing and "unavailable" in missing[0] and "pip install lmgc-example-extra" in missing[0]
    )

    np.save(tmp_path / "x.npy", grads[:400])
    made = _lmgc(example_site, "compress", str(tmp_path / "x.npy"), "--prior", "zeros-favoured")
    assert made.returncode == 0, made.stderr
    back = _lmgc(
        example_site, "decompress", str(tmp_path / "x.npy.lmgc"), "-o", str(tmp_path / "y.npy")
    )
    assert back.returncode == 0, back.stderr
    assert same_bits(np.load(tmp_path / "y.npy"), grads[:400])

    out = str(tmp_path / "z.lmgc")
    refused = _lmgc(
        example_site, "compress", str(tmp_path / "x.npy"), "-o", out, "--prior", "needs-missing"
    )
    assert refused.returncode == 1
    assert "lmgc_example_dependency_that_is_not_installed" in refused.stderr

    # Without the plugin installed, a stream its prior coded names what is missing; one whose
    # every part is stored (the prior expanded the gradients) decodes by copying, without it.
    np.save(tmp_path / "zeros.npy", np.zeros(4096, dtype="<f4"))
    zeros = _lmgc(example_site, "compress", str(tmp_path / "zeros.npy"), "--prior",
                  "zeros-favoured")  # fmt: skip
    assert zeros.returncode == 0, zeros.stderr

    def without_plugin(packed: str, out: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "lmgc_core.cli.commands", "decompress", packed, "-o", out]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    gone = without_plugin(str(tmp_path / "zeros.npy.lmgc"), str(tmp_path / "z.npy"))
    assert gone.returncode == 1 and "zeros-favoured" in gone.stderr
    stored = without_plugin(str(tmp_path / "x.npy.lmgc"), str(tmp_path / "s.npy"))
    assert stored.returncode == 0, stored.stderr
    assert same_bits(np.load(tmp_path / "s.npy"), grads[:400])


def test_third_party_plugin_passes_the_kit(example_site):
    """What a plugin author runs in their own test-suite, against the installed package."""
    code = (
        "from lmgc_core.testing import check_prior\n"
        "passed = check_prior({'name': 'zeros-favoured', 'weight': 3.0}, batch_independent=True)\n"
        "print(len(passed), 'rules passed')\n"
    )
    proc = _lmgc_python(example_site, code)
    assert proc.returncode == 0, proc.stderr
    assert "rules passed" in proc.stdout


def test_a_broken_factory_import_is_a_plugin_error(monkeypatch):
    """A lazy import the plugin did not declare in ``requires`` becomes a PluginError."""

    def factory(**options):
        import lmgc_module_that_does_not_exist  # noqa: F401

    reg = registry.Registration("prior", "lazy", factory, "someone 1.0", install_hint="pip x")
    monkeypatch.setitem(registry.registrations(), ("prior", "lazy"), reg)
    with pytest.raises(
        PluginError,
        match=r"prior 'lazy' \(from someone 1.0\) failed to import "
        r"lmgc_module_that_does_not_exist .*install it with: pip x",
    ):
        registry.build("prior", "lazy")


def _lmgc_python(site: Path, code: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
