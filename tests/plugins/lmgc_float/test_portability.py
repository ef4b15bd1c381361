"""Portable streams: what the coder sees must not depend on the CPU's SIMD level or thread count.

numpy dispatches ufuncs (np.exp/np.log among them) to different SIMD kernels per CPU, and their
results differ in the last bits. A stream made here is decoded (and re-encoded) in fresh
processes with numpy's newer kernels switched off (``NPY_DISABLE_CPU_FEATURES``: what an AVX2-only
or an SSE4.2-only machine runs) and with other thread counts; it must give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from lmgc_core import Pipeline
from tests.paths import ROOT_DIR

ROOT = ROOT_DIR
CANDIDATES = ["", "AVX512_ICL AVX512_SPR", "X86_V4 AVX512_ICL AVX512_SPR",
              "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"]  # fmt: skip
CONFIGS = {
    "float": {"prior": {"name": "float", "block_values": 5000}},  # level 1, the default
    "float-level2": {"prior": {"name": "float", "block_values": 5000, "level": 2}},
    "float-layout": {
        "prior": {"name": "float", "layout": [[256, 64], [256], [256, 256], [256], [10, 256], [10]]}
    },
    "float-quantize8": {"stages": [{"name": "quantize", "bits": 8}], "prior": "float"},
    "adaptive": {"prior": "adaptive"},
    "adaptive-quantize8": {"stages": [{"name": "quantize", "bits": 8}], "prior": "adaptive"},
}

SCRIPT = """
import hashlib, sys, numpy as np
from lmgc_core import Pipeline, decompress
blob = open(sys.argv[1], "rb").read()
arr = np.load(sys.argv[2])
out = decompress(blob)
import json
from tests.paths import ROOT_DIR
cfg = json.loads(sys.argv[3])
again = Pipeline.from_config(cfg).compress(arr)
print(hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest(),
      hashlib.sha256(again).hexdigest())
"""


def _settings() -> list[str]:
    """The ``NPY_DISABLE_CPU_FEATURES`` values this machine can run: each candidate less the
    features this CPU lacks (numpy refuses to disable those)."""
    from numpy._core._multiarray_umath import __cpu_features__ as have

    out = []
    for candidate in CANDIDATES:
        setting = " ".join(f for f in candidate.split() if have.get(f, False))
        if setting not in out and (setting or not candidate):
            out.append(setting)
    return out


@pytest.fixture(scope="module")
def workload(tmp_path_factory, mlp_rows):
    path = tmp_path_factory.mktemp("port") / "grads.npy"
    arr = np.ascontiguousarray(mlp_rows[:1, :85002])
    np.save(path, arr)
    return path, arr


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_streams_decode_and_encode_identically_on_other_simd_levels(name, workload, tmp_path):
    import json

    path, arr = workload
    config = CONFIGS[name]
    blob = Pipeline.from_config(config).compress(arr)
    stream = tmp_path / "s.lmgc"
    stream.write_bytes(blob)
    want = (
        hashlib.sha256(arr.tobytes()).hexdigest()
        if not config.get("stages")
        else hashlib.sha256(Pipeline.from_config(config).reconstruct(arr).tobytes()).hexdigest(),
        hashlib.sha256(blob).hexdigest(),
    )
    settings = _settings()
    assert len(settings) >= 2, "this CPU allows no SIMD downgrade: the test would prove nothing"
    for setting in settings:
        for threads in ("1", "2"):
            env = {
                **os.environ,
                "NPY_DISABLE_CPU_FEATURES": setting,
                "OMP_NUM_THREADS": threads,
                "NUMBA_NUM_THREADS": threads,
                "OPENBLAS_NUM_THREADS": threads,
            }
            if not setting:
                env.pop("NPY_DISABLE_CPU_FEATURES")
            run = subprocess.run(
                [sys.executable, "-c", SCRIPT, str(stream), str(path), json.dumps(config)],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=300,
            )
            assert run.returncode == 0, f"{setting!r}: {run.stderr[-2000:]}"
            got = tuple(run.stdout.split()[-2:])
            assert got == want, f"{name} differs with NPY_DISABLE_CPU_FEATURES={setting!r}"


BIG_ENDIAN = ROOT_DIR / "tests" / "data" / "big_endian"


def test_streams_written_on_a_big_endian_machine():
    """Written on s390x (see that folder's README): level 1 stored its incompressible blocks
    in the writer's byte order, and quantize read its state's bit patterns in the reader's, so
    neither decoded on the other byte order (a checksum error). They decode here, and this
    machine writes the same bytes, except quantize's, whose header records its part as
    ``>f4`` there (the same values). ``level1-layout-packed`` packs its side values (fast
    blocks version 9); streams of an older ``fast_version`` (the set before version 9) are
    compared by their stored blocks."""
    from lmgc_float.fast import FAST_VERSION

    import lmgc_core
    from lmgc_core.stream import container

    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()
    braw = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()
    grads = np.load(BIG_ENDIAN / "grads.npy")
    scaled = np.load(BIG_ENDIAN / "scaled.npy")
    rows, cols = np.arange(30) % 7 - 3, np.arange(50) % 5 - 2
    exact = np.ldexp(grads.reshape(30, 50).astype("<f8"), rows[:, None] + cols[None, :])
    assert scaled.tobytes() == exact.astype("<f4").tobytes()
    l1 = {"prior": {"name": "float", "level": 1}}
    packed = {"prior": {**l1["prior"], "layout": [[30, 50]], "small_parts": "level"}}
    cases = {
        "stored-f4": (np.frombuffer(raw, "<f4"), None, l1),
        "stored-i2": (np.frombuffer(raw, "<i2"), None, l1),
        "stored-f8-delta": (np.frombuffer(raw, "<f8"), np.frombuffer(braw, "<f8"), l1),
        "level1": (grads, None, l1),
        "level1-layout-packed": (scaled, None, packed),
    }
    for name, (x, base, config) in cases.items():
        blob = (BIG_ENDIAN / f"{name}.lmgc").read_bytes()
        assert lmgc_core.decompress(blob, base=base).tobytes() == x.tobytes(), name
        ours = Pipeline.from_config(config).compress(x, base=base)
        (header, offset), (_, our_offset) = container.read_header(blob), container.read_header(ours)
        if header["prior"]["fast_version"] == FAST_VERSION:
            assert ours == blob, name
        else:
            assert header["prior"]["fast_version"] == 8, name
            if name.startswith("stored"):
                assert ours[our_offset:] == blob[offset:], name
    # its one block's side information, read by the layout's own Python reader: row and
    # column means, both packed (flags 0x62)
    from tests.plugins.lmgc_float.test_side_values import _side

    (block,) = container.unpack((BIG_ENDIAN / "level1-layout-packed.lmgc").read_bytes()).blocks
    assert _side(bytes(block), 30, 50)["flags"] == 0x62
    for bits in (8, 1):
        pipeline = Pipeline.from_config({"stages": [{"name": "quantize", "bits": bits}]})
        blob = (BIG_ENDIAN / f"quantize{bits}.lmgc").read_bytes()
        assert lmgc_core.decompress(blob).tobytes() == pipeline.reconstruct(grads).tobytes()
