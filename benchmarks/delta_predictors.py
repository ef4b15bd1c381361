"""What else predicts a weight's change between checkpoints (issue 21: "measure what else helps:
optimizer moments next to their weights, the sign of the last update").

Why: ``--base`` codes each weight's ulp distance from the previous checkpoint's, in contexts of
the base value. Training has more to offer a decoder that holds the earlier checkpoints: the
last update (the step before), and the AdamW moments the base checkpoint stores next to its
weights, whose ratio m / (sqrt(v) + eps) is the direction of the next steps. This measures, on
the pretraining series of ``benchmarks/deltas.py`` (checkpoints 50 steps apart, float32 weights;
pairs with two earlier checkpoints), the ideal code length (``deltas.ideal_bits``: the ulp
distance's bucket entropy with the base's exponent as context, plus its raw bits) of the weights
against:

* the previous checkpoint (what ``--base`` does);
* a linear extrapolation, ``prev + (prev - prev2)``;
* the previous checkpoint moved along its AdamW direction, ``prev + alpha * m / (sqrt(v) + eps)``
  with ``alpha`` fitted per tensor by least squares (an upper bound: the fit uses the new values);
* the previous checkpoint, with the sign of the last update ``prev - prev2`` added to the context.

Every prediction is float32 arithmetic (exactly rounded, so a decoder could repeat it).

    python benchmarks/delta_predictors.py      # needs bench-out/deltas (benchmarks/deltas.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deltas

DATA = Path(__file__).resolve().parent.parent / "bench-out" / "deltas"


def _load(checkpoint: dict, kind: str) -> dict[str, np.ndarray]:
    return deltas._read(checkpoint["files"][f"{kind}.safetensors"])


def _with_last_sign(new: np.ndarray, old: np.ndarray, older: np.ndarray):
    """(context, bucket, raw bits) of ``deltas.ideal_bits``, the context also the sign of
    ``old - older``."""
    d = deltas.ulp_distance(new, old).astype(np.int64)
    mag = np.abs(d)
    length = np.zeros(mag.shape, np.int64)
    nz = mag > 0
    length[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    last = np.sign(deltas.ulp_distance(old, older).astype(np.int64)) + 1
    exponent = (deltas._uint(old).astype(np.int64) >> 23) & 0xFF
    return exponent * 3 + last, np.where(d < 0, -length, length), float((length - 1).clip(0).sum())


def _entropy_bytes(ctx: np.ndarray, bucket: np.ndarray, raw_bits: float) -> float:
    _, counts = np.unique(ctx * 256 + (bucket + 64), return_counts=True)
    _, ctx_counts = np.unique(ctx, return_counts=True)
    h = -(counts * np.log2(counts)).sum() + (ctx_counts * np.log2(ctx_counts)).sum()
    return (h + raw_bits) / 8


def main() -> None:
    series = json.loads((DATA / "manifest.json").read_text())["series"]
    w = [_load(c, "weights") for c in series]
    m = [_load(c, "exp_avg") for c in series]
    v = [_load(c, "exp_avg_sq") for c in series]
    refs: dict[str, list] = {"previous": [], "extrapolated": [], "AdamW direction": []}
    signed, orig = [], 0
    for t in range(2, len(series)):
        new, old, older = w[t], w[t - 1], w[t - 2]
        extrapolated, moved = {}, {}
        for k, a in new.items():
            b, c = old[k], older[k]
            extrapolated[k] = (b + (b - c)).astype(np.float32)
            u = (m[t - 1][k] / (np.sqrt(v[t - 1][k]) + np.float32(1e-8))).astype(np.float32)
            d = (a.astype(np.float64) - b).ravel()
            uu = u.astype(np.float64).ravel()
            alpha = np.float32((d @ uu) / max(uu @ uu, 1e-30))
            moved[k] = (b + alpha * u).astype(np.float32)
            signed.append(_with_last_sign(a, b, c))
        refs["previous"].append(("", new, old))
        refs["extrapolated"].append(("", new, extrapolated))
        refs["AdamW direction"].append(("", new, moved))
        orig += sum(a.nbytes for a in new.values())
    print(f"{len(series) - 2} pairs of float32 weights, {orig / 1e6:.1f} MB; ideal code length:\n")
    print("| against | context | ideal size % |")
    print("|---|---|---:|")
    for name, pairs in refs.items():
        print(f"| {name} | base exponent | {100 * deltas.ideal_bits(pairs)[0] / orig:.2f} |")
    ctx, bucket = (np.concatenate([s[i] for s in signed]) for i in range(2))
    raw = sum(s[2] for s in signed)
    size = _entropy_bytes(ctx, bucket, raw)
    print(f"| previous | base exponent, sign of the last update | {100 * size / orig:.2f} |")


if __name__ == "__main__":
    main()
