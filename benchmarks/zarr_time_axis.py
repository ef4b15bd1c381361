"""The Zarr codec's ``time_axis`` (issue 21) on real series: a tensor stacked over checkpoints,
shape ``(steps, rows, cols)``, chunked several steps deep, each chunk a series whose step ``t`` is
coded against step ``t - 1``; against the same codec without ``time_axis``, pcodec and zstd on
the same chunks.

Data: the training run of ``benchmarks/delta_workloads.py`` (``bench-out/deltas``: a byte GPT,
AdamW, a checkpoint every 50 steps, 8 checkpoints; and its lr 5e-5 fine-tune, 4 checkpoints 25
steps apart): for each group (weights, AdamW ``exp_avg``, ``exp_avg_sq``) every 2-d tensor of the
chosen blocks is stacked over the checkpoints and stored as its own array; and the shared MLP's
gradient snapshots (``/work/shared/data/mlp_digits_grads.npy``, 7 x 85,002, 75 steps apart) as
a 7 x 332 x 256 array. Sizes are every chunk file's bytes over the raw bytes; every store is read
back and compared bit for bit. One thread each (``threading.max_workers`` 1).

    python benchmarks/zarr_time_axis.py                      # blocks.1, steps 2/4/8
    python benchmarks/zarr_time_axis.py --blocks 0 1 2 3 --depths 8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DELTAS = ROOT / "bench-out" / "deltas"
GRADS = ROOT.parent / "shared" / "data" / "mlp_digits_grads.npy"
GROUPS = {"weights": "weights", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


def series(run: str, group: str, blocks: list[int]) -> dict[str, np.ndarray]:
    """Every 2-d tensor of ``blocks`` in ``group``, stacked over the run's checkpoints."""
    from safetensors.numpy import load_file

    files = sorted(DELTAS.glob(f"{run}-*.{GROUPS[group]}.safetensors"))
    if not files:
        raise SystemExit(f"no {run} checkpoints in {DELTAS}: run benchmarks/delta_workloads.py")
    steps = [load_file(str(f)) for f in files]
    names = [k for k, v in steps[0].items() if v.ndim == 2
             and any(k.startswith(f"blocks.{b}.") for b in blocks)]  # fmt: skip
    return {k: np.stack([s[k] for s in steps]) for k in names}


def variants() -> dict[str, dict]:
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.codecs.numcodecs import PCodec

    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    out = {}
    for level in (1, 2):
        out[f"lmgc -l {level}"] = {"serializer": LMGCZarrCodec(level=level), "compressors": None}
        out[f"lmgc -l {level} time_axis"] = {
            "serializer": LMGCZarrCodec(level=level, time_axis=0),
            "compressors": None,
        }
    out["pcodec"] = {"serializer": PCodec(level=8), "compressors": None}
    out["zstd -9"] = {"serializer": BytesCodec(), "compressors": [ZstdCodec(level=9)]}
    return out


def measure(arrays: dict[str, np.ndarray], depth: int, tmp: Path) -> dict[str, tuple[int, float]]:
    """Stored bytes and write CPU seconds of every variant over ``arrays``, chunked ``depth``
    steps deep (whole steps per chunk otherwise); every read-back checked bit for bit."""
    import zarr

    result = {}
    tmp = Path(tempfile.mkdtemp(dir=tmp))  # one folder per call: groups share tensor names
    for name, kw in variants().items():
        total, cpu = 0, 0.0
        for key, arr in arrays.items():
            path = tmp / f"{name.replace(' ', '_')}-{key}-{depth}.zarr"
            z = zarr.create_array(str(path), shape=arr.shape, chunks=(depth, *arr.shape[1:]),
                                  dtype=arr.dtype, **kw)  # fmt: skip
            t = time.process_time()
            z[:] = arr
            cpu += time.process_time() - t
            back = zarr.open_array(str(path), mode="r")[:]
            if back.tobytes() != arr.tobytes():
                raise SystemExit(f"{name}: {key} does not read back bit for bit")
            total += sum(f.stat().st_size for f in path.rglob("*")
                         if f.is_file() and f.name != "zarr.json")  # fmt: skip
        result[name] = (total, cpu)
    return result


def main() -> None:
    import zarr

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--groups", nargs="+", default=[*GROUPS, "ft-weights", "grads"])
    ap.add_argument("--json", type=Path, help="Also write the numbers here.")
    args = ap.parse_args()
    zarr.config.set({"threading.max_workers": 1})
    data: dict[str, dict[str, np.ndarray]] = {}
    for group in args.groups:
        if group == "grads":
            g = np.load(GRADS)
            data[group] = {"grads": np.ascontiguousarray(g[:, : 332 * 256].reshape(-1, 332, 256))}
        elif group.startswith("ft-"):
            data[group] = series("ft", group[3:], args.blocks)
        else:
            data[group] = series("pre", group, args.blocks)
    rows = []
    print(f"load average {os.getloadavg()[0]:.2f}; % of the raw bytes (write CPU s)\n")
    names = list(variants())
    print("| data | steps per chunk | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    with tempfile.TemporaryDirectory() as tmp:
        for group, arrays in data.items():
            raw = sum(a.nbytes for a in arrays.values())
            steps = next(iter(arrays.values())).shape[0]
            for depth in [d for d in args.depths if d <= steps]:
                got = measure(arrays, depth, Path(tmp))
                cells = [f"{100 * s / raw:.2f} ({c:.2f})" for s, c in got.values()]
                shape = "+".join(str(tuple(a.shape)) for a in list(arrays.values())[:1])
                print(f"| {group} ({len(arrays)} x {shape}, {raw / 1e6:.1f} MB) | {depth} | "
                      + " | ".join(cells) + " |", flush=True)  # fmt: skip
                rows.append({"group": group, "depth": depth, "raw": raw,
                             "bytes": {k: v[0] for k, v in got.items()},
                             "cpu_s": {k: v[1] for k, v in got.items()}})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
