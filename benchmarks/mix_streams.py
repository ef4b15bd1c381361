"""Real coded streams: the mixture of the bundled LM and the fast prior against the fast prior
alone, on the workloads of docs/results.md.

    python benchmarks/mix_streams.py [--floats 512 2048] [--workloads convnet vgg ...]
                                     [--consult 0,1] [--window 2048] [--decode]

For each workload, a contiguous slice from the middle of its last snapshot is compressed with
the default fast prior (``float``, whole-array path), with ``mix`` of SmolLM2 (llama.cpp, the LM
consulted at the ``--consult`` digit positions, ``all`` for every one) and the fast prior, and
with ``mix`` of the fast prior alone (its digit path, plus the uniform candidate). Sizes are
whole streams (header included) and coded blocks only; ``--decode`` decodes every stream and
checks the bits. Results go to ``bench-out/mix_streams/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "bench-out" / "mix_streams"
WORKLOADS = ["convnet", "vgg", "resnet18", "vit", "mlp-digits"]


def configs(consult: str, fast: str) -> dict[str, dict]:
    lm: dict = {"name": "llamacpp"}
    if consult != "all":
        lm["consult"] = [int(d) for d in consult.split(",") if d]
    return {
        "fast": {"prior": {"name": fast}},
        "fast digit path (mix)": {"prior": {"name": "mix", "experts": [{"name": fast}]}},
        f"mix LM@{consult} + fast": {"prior": {"name": "mix", "experts": [lm, {"name": fast}]}},
    }


def main() -> None:
    from lm_study import workload_slice

    from lmgc_core import Pipeline, decompress
    from lmgc_core.stream import container

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--floats", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--workloads", nargs="+", default=WORKLOADS)
    ap.add_argument("--consult", default="0,1")
    ap.add_argument("--fast", default="float")
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--decode", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.workloads:
        for n in args.floats:
            data = workload_slice(name, n)
            for label, cfg in configs(args.consult, args.fast).items():
                if args.window and "mix" in label:
                    cfg = {**cfg, "window": args.window}
                pipe = Pipeline.from_config(cfg)
                t = time.perf_counter()
                blob = pipe.compress(data)
                seconds = time.perf_counter() - t
                coded = sum(len(b) for b in container.unpack(blob).blocks)
                row = {
                    "workload": name, "floats": int(data.size), "codec": label,
                    "bytes": len(blob), "coded": coded, "original": data.nbytes,
                    "rate": round(100 * len(blob) / data.nbytes, 2),
                    "coded_rate": round(100 * coded / data.nbytes, 2),
                    "seconds": round(seconds, 1),
                }  # fmt: skip
                if "LM" in label:
                    row["lm_calls_saved"] = round(1 - pipe.prior.calls[0] / pipe.prior.steps, 3)
                if args.decode:
                    assert decompress(blob).tobytes() == data.tobytes(), (name, label)
                    row["decoded"] = True
                rows.append(row)
                print(json.dumps(row), flush=True)
    (OUT / "results.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


def table(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(r["codec"] for r in rows))
    out = ["| workload | floats | " + " | ".join(labels) + " | mix − fast |",
           "|---|---:|" + "---:|" * (len(labels) + 1)]  # fmt: skip
    keyed = {(r["workload"], r["floats"], r["codec"]): r for r in rows}
    for w, n in dict.fromkeys((r["workload"], r["floats"]) for r in rows):
        cells = [keyed.get((w, n, label)) for label in labels]
        text = [f"{c['rate']:.2f}% ({c['coded_rate']:.2f}%)" if c else "–" for c in cells]
        diff = "–"
        if cells[0] and cells[-1]:
            d_all = cells[-1]["rate"] - cells[0]["rate"]
            d_coded = cells[-1]["coded_rate"] - cells[0]["coded_rate"]
            diff = f"{d_all:+.2f} ({d_coded:+.2f})"
        out.append(f"| {w} | {n} | " + " | ".join(text) + f" | {diff} |")
    out.append("")
    out.append("Whole stream (coded blocks only, header excluded), % of the original bytes.")
    return "\n".join(out)


if __name__ == "__main__":
    main()
