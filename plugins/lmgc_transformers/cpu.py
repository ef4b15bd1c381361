"""torch's CPU kernels (its "CPU capability"): recorded in the fingerprint, chosen before import.

PyTorch picks one kernel set per process (AVX512, AVX2, DEFAULT...) when it is imported, from
the CPU or from the ``ATEN_CPU_CAPABILITY`` environment variable; the sets round differently, so
a stream decodes only with the set that made it. This module imports no torch: the plugin's
factory calls :func:`request` before the first ``import torch``, so a decoder selects the
recorded set by itself when the CPU has it.
"""

from __future__ import annotations

import os
import sys

ENV = "ATEN_CPU_CAPABILITY"
_ENV_VALUES = {
    "DEFAULT": "default",
    "NO AVX": "default",
    "AVX2": "avx2",
    "AVX512": "avx512",
    "VSX": "vsx",
    "Z VECTOR": "zvector",
    "ZVECTOR": "zvector",
    "SVE256": "sve256",
}


def env_value(capability: str) -> str:
    """The ``ATEN_CPU_CAPABILITY`` value that selects ``capability`` (as torch reports it)."""
    key = str(capability).strip().upper()
    return _ENV_VALUES.get(key, key.lower())


def known(capability: object) -> bool:
    return isinstance(capability, str) and capability.strip().upper() in _ENV_VALUES


def request(capability: str | None) -> None:
    """Ask torch for ``capability``'s kernels, if torch is not imported yet and the user has not
    chosen with ``ATEN_CPU_CAPABILITY`` already (their choice wins; a mismatch is then refused
    by the fingerprint check, with the value to set)."""
    if capability is None or "torch" in sys.modules or os.environ.get(ENV):
        return
    os.environ[ENV] = env_value(capability)


def current() -> str:
    """The kernel set this process's torch runs (``torch.backends.cpu.get_cpu_capability``)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def vendor() -> str | None:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``...; ``None`` where the system does
    not say). A stream made on an Intel Xeon (torch's AVX512 kernels) failed its SHA-256 on an
    AMD EPYC Zen 4 running the same kernels (most likely the BLAS behind the matrix products,
    which picks code paths by vendor too), so the vendor is recorded beside the kernel set."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip() or None
    except OSError:
        pass
    import platform

    return platform.processor() or None
