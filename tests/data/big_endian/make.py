"""Streams for tests/data/big_endian/, written by lmgc on s390x (big-endian, under qemu)."""

import sys
from pathlib import Path

import numpy as np

from lmgc_core import Pipeline

out = Path(sys.argv[1])
rng = np.random.default_rng(7)
raw = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()  # incompressible: stored blocks
braw = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()
grads = (rng.standard_normal(1500) * 1e-3).astype("<f4")
np.save(out / "grads.npy", grads)
l1 = {"prior": {"name": "float", "level": 1}}
(out / "stored-f4.lmgc").write_bytes(Pipeline.from_config(l1).compress(np.frombuffer(raw, "<f4")))
(out / "stored-f8-delta.lmgc").write_bytes(
    Pipeline.from_config(l1).compress(np.frombuffer(raw, "<f8"), base=np.frombuffer(braw, "<f8"))
)
(out / "stored-i2.lmgc").write_bytes(Pipeline.from_config(l1).compress(np.frombuffer(raw, "<i2")))
(out / "level1.lmgc").write_bytes(Pipeline.from_config(l1).compress(grads))
# version 9's packed side values: rows and columns scaled by powers of two (exact), so the fast
# level codes row and column means (mode 2); small_parts "level" keeps the small part at level 1
scaled = (
    (
        grads.reshape(30, 50).astype("<f8")
        * np.exp2(np.arange(30) % 7 - 3.0)[:, None]
        * np.exp2(np.arange(50) % 5 - 2.0)[None, :]
    )
    .astype("<f4")
    .ravel()
)
np.save(out / "scaled.npy", scaled)
packed = {"prior": {"name": "float", "level": 1, "layout": [[30, 50]], "small_parts": "level"}}
(out / "level1-layout-packed.lmgc").write_bytes(Pipeline.from_config(packed).compress(scaled))
(out / "quantize8.lmgc").write_bytes(
    Pipeline.from_config({"stages": [{"name": "quantize", "bits": 8}]}).compress(grads)
)
(out / "quantize1.lmgc").write_bytes(
    Pipeline.from_config({"stages": [{"name": "quantize", "bits": 1}]}).compress(grads)
)
print(sys.byteorder, sorted(p.name for p in out.iterdir()))
