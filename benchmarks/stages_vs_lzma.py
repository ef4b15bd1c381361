"""The table "stages + lmgc(adaptive) vs stages + LZMA" of docs/pipelines.md (the paper's
Figure 4 setting): every snapshot of a gradient file compressed as its own stream, each stream
decoded and compared bit for bit with ``Pipeline.reconstruct``, rates = compressed / original
float32 bytes. "+LZMA" is ``lzma.compress`` (preset 6) of the same stage output (all parts'
bytes concatenated, stage state not counted).

    python benchmarks/make_mlp_digits.py bench-out/mlp_digits_grads.npy
    python benchmarks/stages_vs_lzma.py bench-out/mlp_digits_grads.npy
"""

from __future__ import annotations

import lzma
import sys

import numpy as np

from lmgc_core.coding.pipeline import Pipeline

ROWS = [
    ("none (lossless)", []),
    ("quantize(bits=16)", [{"name": "quantize", "bits": 16}]),
    ("quantize(bits=8)", [{"name": "quantize", "bits": 8}]),
    ("quantize(bits=4)", [{"name": "quantize", "bits": 4}]),
    ("quantize(bits=1) (SignSGD)", [{"name": "quantize", "bits": 1}]),
    *(
        (f"sparsify(keep={k})", [{"name": "sparsify", "keep": k}])
        for k in (0.5, 0.25, 0.1)
    ),
    *(
        (f"sparsify(keep={k}, index_format=delta)",
         [{"name": "sparsify", "keep": k, "index_format": "delta"}])
        for k in (0.5, 0.25, 0.1)
    ),
    ("sparsify(keep=0.1, method=random)", [{"name": "sparsify", "keep": 0.1, "method": "random"}]),
    ("sparsify(keep=0.1) -> quantize(bits=8)",
     [{"name": "sparsify", "keep": 0.1}, {"name": "quantize", "bits": 8}]),
]  # fmt: skip


def main(path: str) -> None:
    grads = np.load(path)
    print("| stages | stage output | + lmgc (adaptive) | + LZMA |")
    print("| --- | ---: | ---: | ---: |")
    for label, stages in ROWS:
        pipe = Pipeline.from_config({"stages": stages, "prior": {"name": "adaptive"}})
        staged = lm = lz = 0
        for g in grads:
            parts, _ = pipe._forward(g)  # the stage output lmgc codes
            raw = b"".join(np.ascontiguousarray(p).tobytes() for p in parts.values())
            blob = pipe.compress(g)
            assert pipe.decompress(blob).tobytes() == pipe.reconstruct(g).tobytes()
            staged += len(raw)
            lm += len(blob)
            lz += len(lzma.compress(raw))
        rate = [100 * n / grads.nbytes for n in (staged, lm, lz)]
        print(f"| {label} | {rate[0]:.2f} % | {rate[1]:.2f} % | {rate[2]:.2f} % |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-out/mlp_digits_grads.npy")
