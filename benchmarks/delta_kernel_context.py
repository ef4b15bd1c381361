"""What else would help the delta model: ideal code lengths of the ulp distance's fields with
extra contexts that a caller could hand over (issue 21: "measure what else helps").

For the last pair of a series (checkpoint t against t - 1, weights f32, 2-D tensors), the
empirical conditional entropy (bits, as % of the original size) of

* L, the distance's bit length, given the model's prediction (rank-1 row/column means of
  q = L + e_base, minus e_base), and additionally given the previous distance's q (t - 1 vs
  t - 2) or Adam's |exp_avg| / sqrt(exp_avg_sq) of checkpoint t (log2, rounded);
* the sign of the distance alone, given the base's sign, the previous distance's sign, the sign of
  exp_avg at t (decoded first in a whole checkpoint) or at t - 1 (part of the base checkpoint);
* the raw bits below the leading one (what no context touches).

Empirical entropies with thousands of values per context are a slightly optimistic bound; the
differences between rows are what matters.

    python benchmarks/delta_kernel_context.py              # pretraining series and fine-tune
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import delta_workloads
import deltas


def entropy(x: np.ndarray, ctx: np.ndarray | None = None) -> float:
    """Total bits of ``x`` given ``ctx`` (empirical conditional entropy)."""
    x = np.asarray(x, np.int64).ravel()
    ctx = np.zeros_like(x) if ctx is None else np.asarray(ctx, np.int64).ravel()
    key = (ctx - ctx.min()) * (int(x.max() - x.min()) + 1) + (x - x.min())
    _, joint = np.unique(key, return_counts=True)
    _, marg = np.unique(ctx, return_counts=True)
    return float(-(joint * np.log2(joint)).sum() + (marg * np.log2(marg)).sum())


def fields(new: np.ndarray, old: np.ndarray):
    """(d, L, e_base, base sign) of the float32 ulp distance."""
    d = deltas.ulp_distance(new, old).reshape(new.shape).astype(np.int64)
    mag = np.abs(d)
    length = np.zeros(mag.shape, np.int64)
    nz = mag > 0
    length[nz] = np.floor(np.log2(mag[nz])).astype(np.int64) + 1
    bits = deltas._uint(old).reshape(old.shape).astype(np.int64)
    return d, length, (bits >> 23) & 0xFF, bits >> 31


def predicted(length: np.ndarray, eb: np.ndarray) -> np.ndarray:
    q = np.where(length > 0, length + eb, np.nan)
    with np.errstate(all="ignore"):
        rows = np.nan_to_num(np.nanmean(q, axis=1, keepdims=True))
        cols = np.nan_to_num(np.nanmean(q - rows, axis=0, keepdims=True))
    return np.clip(np.round(rows + cols - eb), 0, 32).astype(np.int64)


def measure(chain: list[dict]) -> dict[str, float]:
    def read(c, kind):
        return deltas._read(c["files"][f"{kind}.safetensors"])

    c0, c1, c2 = chain[-3:]
    w0, w1, w2 = read(c0, "weights"), read(c1, "weights"), read(c2, "weights")
    m1, m2, v2 = read(c1, "exp_avg"), read(c2, "exp_avg"), read(c2, "exp_avg_sq")
    tot: dict[str, float] = {}
    bits = 0
    for name, a in w2.items():
        if a.ndim != 2:
            continue
        d, length, eb, sb = fields(a, w1[name])
        dp, lp, ebp, _ = fields(w1[name], w0[name])
        nz = d != 0
        s = (d < 0).astype(np.int64)
        sp = (dp < 0).astype(np.int64) + 2 * (dp == 0)
        pred = predicted(length, eb)
        qprev = np.clip(np.where(dp != 0, lp + ebp, 0) - eb - pred + 10, 0, 30)
        ratio = np.abs(m2[name]) / (np.sqrt(v2[name]) + 1e-8) + 1e-30
        adam = np.clip(np.round(np.log2(ratio)), -20, 5).astype(np.int64) + 50
        row = {
            "raw bits below the leading one": float(np.maximum(length - 1, 0).sum()),
            "L | prediction": entropy(length, pred),
            "L | prediction, previous q": entropy(length, pred * 100 + qprev),
            "L | prediction, |exp_avg|/sqrt(exp_avg_sq) at t": entropy(length, pred * 100 + adam),
            "sign": entropy(s[nz]),
            "sign | base sign": entropy(s[nz], sb[nz]),
            "sign | previous distance's sign": entropy(s[nz], sp[nz]),
            "sign | sign of exp_avg at t": entropy(s[nz], (m2[name] > 0)[nz]),
            "sign | sign of exp_avg at t - 1 (in the base)": entropy(s[nz], (m1[name] > 0)[nz]),
        }
        for k, v in row.items():
            tot[k] = tot.get(k, 0.0) + v
        bits += 32 * a.size
    return {k: 100 * v / bits for k, v in tot.items()}


def main() -> None:
    manifest = delta_workloads.load()
    for label, chain in (("pretraining", manifest["series"]), ("fine-tune", manifest["finetunes"])):
        names = " vs ".join(c["name"] for c in chain[-1:-4:-1])
        print(f"\n## {label}: {names} (weights f32, 2-D tensors; % of the original size)")
        for k, v in measure(chain).items():
            print(f"{k:50s} {v:6.2f} %")


if __name__ == "__main__":
    main()
