"""Tokens per second of the language-model priors, coding real gradients (real streams).

    python benchmarks/lm_speed.py [--prior llamacpp] [--window 2048] [--batch B] [--threads T]
                                  [--floats N] [--decode] [--mix CONSULT] [--fast float]
                                  [-P KEY=VALUE ...]   # e.g. -P device=cuda -P model=x.gguf

Compresses ``N`` real float32 gradients (default: exactly one full batch of windows, so no
half-empty batch skews the rate) with the prior at the given window and batch, and reports
tokens/s = serialized symbols (9 per float: 8 hex digits and the separator) per second of
wall time, model load excluded (a warm-up call loads it). ``--decode`` also decodes and checks
the bits. ``--mix 0,1`` codes with ``mix`` of the LM consulted at those digit positions and the
``--fast`` prior, and reports the share of LM calls saved. The machine's load average is printed:
on a shared CPU, compare runs made at similar load only.

Before/after: run this file from a checkout of an older commit (``git archive <commit> | tar -x
-C /tmp/before``, then ``PYTHONPATH=/tmp/before:/tmp/before/plugins python
benchmarks/lm_speed.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "mlp_digits_grads.npy"


def gradients(n: int) -> np.ndarray:
    path = SHARED if SHARED.exists() else ROOT / "tests" / "data" / "mlp_grads_8k.npy"
    flat = np.load(path).reshape(-1)
    flat = flat[flat != 0] if n <= (flat != 0).sum() else flat  # dense values: the hard case
    start = max(0, flat.size // 2 - n // 2)
    return np.ascontiguousarray(flat[start : start + n], dtype=np.float32)


def main() -> None:
    from lmgc_core import Pipeline, decompress
    from lmgc_core.cli.options import parse_pairs
    from lmgc_core.components import registry

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default="llamacpp")
    ap.add_argument("--window", type=int, default=None, help="default: the prior's")
    ap.add_argument("--batch", type=int, default=None, help="default: the prior's")
    ap.add_argument("--threads", type=int, default=None, help="default: the prior's")
    ap.add_argument("--floats", type=int, default=None, help="default: one full batch")
    ap.add_argument("--decode", action="store_true")
    ap.add_argument("--mix", default=None, metavar="CONSULT", help="e.g. 0,1 or all")
    ap.add_argument("--fast", default="float")
    ap.add_argument("-P", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the LM prior (JSON values parsed)")  # fmt: skip
    args = ap.parse_args()

    lm: dict = {"name": args.prior, **parse_pairs(tuple(args.options))}
    if args.threads is not None:
        lm["threads"] = args.threads
    prior = lm
    if args.mix is not None:
        expert = dict(lm)
        if args.mix != "all":
            expert["consult"] = [int(d) for d in args.mix.split(",") if d]
        prior = {"name": "mix", "experts": [expert, {"name": args.fast}], "fallback": False}
    built = registry.build("prior", prior["name"], {k: v for k, v in prior.items() if k != "name"})
    window = args.window or built.default_window
    batch = args.batch or built.default_batch_size
    per_window = (window - 1) // 9
    floats = args.floats or per_window * batch
    data = gradients(floats)
    pipe = Pipeline.from_config({"prior": prior, "window": window, "batch": batch})
    pipe.compress(data[:2])  # load the model (not timed)
    calls0 = list(getattr(pipe.prior, "calls", []))
    steps0 = getattr(pipe.prior, "steps", 0)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    blob = pipe.compress(data)
    enc = time.perf_counter() - t
    tokens = data.size * 9
    result = {
        "prior": prior,
        "window": window,
        "batch": batch,
        "floats": int(data.size),
        "tokens": tokens,
        "compress_tok_s": round(tokens / enc, 1),
        "rate_percent": round(100 * len(blob) / data.nbytes, 2),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    if args.mix is not None:
        calls = pipe.prior.calls[0] - calls0[0]
        steps = pipe.prior.steps - steps0
        result["lm_calls"] = calls
        result["lm_calls_saved"] = round(1 - calls / steps, 3) if steps else 0.0
    if args.decode:
        t = time.perf_counter()
        back = decompress(blob)
        result["decompress_tok_s"] = round(tokens / (time.perf_counter() - t), 1)
        assert back.tobytes() == data.tobytes(), "round trip is not bit-exact"
    import lmgc_core

    code = Path(lmgc_core.__file__).resolve().parents[1]
    rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    result["code"] = f"{code} {rev}".strip()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
