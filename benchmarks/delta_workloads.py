"""A real training run for the checkpoint-series and fine-tune benchmarks (issue 21).

Why: delta coding is judged on what a training run really saves (AdamW moments next to their
weights, checkpoints k steps apart, a fine-tune against its base), not on noise added to an
array. This script trains a small byte-level GPT on a 1-2 core CPU and saves what a user saves:

* pretraining on corpus A, the Python language reference as shipped in the standard library
  (``pydoc_data.topics``, ~465 KB of English prose and code), AdamW (lr 1e-3, warmup then cosine
  to 1e-4, weight decay 0.1), a checkpoint every ``--every`` steps;
* a fine-tune of the last pretraining checkpoint on corpus B, the licence texts of the packages
  installed in this venv (``*.dist-info`` licence files, deduplicated, sorted by path), with a
  fresh AdamW at lr 5e-5 (constant), saved every ``--ft-every`` steps.

Each checkpoint is written as ``torch.save({"model": ..., "optimizer": ...})`` (float32; AdamW's
``exp_avg``, ``exp_avg_sq``, ``step`` as torch stores them) and exported as name -> array files
that lmgc reads: ``NAME.safetensors`` / ``NAME.npz`` (every tensor, ``model.<p>``,
``optimizer.<p>.exp_avg|exp_avg_sq|step``), one file per group (``NAME.weights.*``,
``NAME.exp_avg.*``, ``NAME.exp_avg_sq.*``, keyed by parameter name), and the weights rounded to
bfloat16 (round to nearest even, ``NAME.weights-bf16.safetensors``; npz has no bfloat16).
Everything is cached under ``bench-out/deltas/`` (``--refresh`` rebuilds); ``manifest.json``
describes the run and ``READY`` lists the files once they all exist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import site
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out" / "deltas"
SEED = 1234
GROUPS = ("weights", "exp_avg", "exp_avg_sq")


def corpus_a() -> bytes:
    """The Python language reference shipped with the interpreter (pydoc_data.topics)."""
    import pydoc_data.topics as topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics)).encode("utf-8")


def corpus_b(limit: int = 400_000) -> bytes:
    """Licence texts of the installed packages: legal English, a different domain from A."""
    seen: set[bytes] = set()
    parts: list[bytes] = []
    for base in sorted(set(site.getsitepackages())):
        pats = ("*.dist-info/**/LICEN[CS]E*", "*.dist-info/**/COPYING*")
        files = sorted({p for pat in pats for p in Path(base).glob(pat) if p.is_file()})
        for f in files:
            data = f.read_bytes()
            key = hashlib.sha256(data).digest()
            if key not in seen and data.strip():
                seen.add(key)
                parts.append(data)
    text = b"\n\n".join(parts)
    if len(text) < 50_000:
        raise SystemExit("corpus B: too few licence files found in site-packages")
    return text[:limit]


def build_model(d_model: int, n_layer: int, n_head: int, ctx: int):
    """A GPT-like byte model (pre-LN blocks, untied head so state_dict has no shared tensors)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(d_model)
            self.qkv = nn.Linear(d_model, 3 * d_model)
            self.proj = nn.Linear(d_model, d_model)
            self.ln2 = nn.LayerNorm(d_model)
            self.fc = nn.Linear(d_model, 4 * d_model)
            self.out = nn.Linear(4 * d_model, d_model)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, n_head, d // n_head).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(256, d_model)
            self.pos = nn.Embedding(ctx, d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, 256, bias=False)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln_f(x))

    return GPT()


def _batches(data: bytes, batch: int, ctx: int, gen):
    import torch

    arr = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    while True:
        ix = torch.randint(0, len(arr) - ctx - 1, (batch,), generator=gen)
        x = torch.stack([arr[i : i + ctx] for i in ix.tolist()])
        y = torch.stack([arr[i + 1 : i + ctx + 1] for i in ix.tolist()])
        yield x, y


def _export(path: Path, model, optimizer) -> dict[str, str]:
    """Write NAME.pt and its name -> array exports; return {kind: path}."""
    import torch
    from safetensors.numpy import save_file as save_np
    from safetensors.torch import save_file as save_torch

    msd, osd = model.state_dict(), optimizer.state_dict()
    torch.save({"model": msd, "optimizer": osd}, path.with_suffix(".pt"))
    names = [n for n, _ in model.named_parameters()]
    order = [i for g in osd["param_groups"] for i in g["params"]]
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in GROUPS}
    full: dict[str, np.ndarray] = {}
    for name, t in msd.items():
        groups["weights"][name] = t.detach().numpy().copy()
        full[f"model.{name}"] = groups["weights"][name]
    for idx, pname in zip(order, names, strict=True):
        st = osd["state"].get(idx, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in st:
                arr = st[key].detach().numpy().copy()
                full[f"optimizer.{pname}.{key}"] = arr
                if key in groups:
                    groups[key][pname] = arr
    files = {"pt": str(path.with_suffix(".pt"))}
    stem = str(path)
    save_np(full, stem + ".safetensors")
    np.savez(stem + ".npz", **full)
    files["all.safetensors"], files["all.npz"] = stem + ".safetensors", stem + ".npz"
    for g, tensors in groups.items():
        save_np(tensors, f"{stem}.{g}.safetensors")
        np.savez(f"{stem}.{g}.npz", **tensors)
        files[f"{g}.safetensors"], files[f"{g}.npz"] = f"{stem}.{g}.safetensors", f"{stem}.{g}.npz"
    bf16 = {n: t.detach().to(torch.bfloat16).contiguous() for n, t in msd.items()}
    save_torch(bf16, f"{stem}.weights-bf16.safetensors")
    files["weights-bf16.safetensors"] = f"{stem}.weights-bf16.safetensors"
    return files


def _train(model, optimizer, batches, steps: int, lr_at, every: int, save, log) -> list[dict]:
    from torch.nn import functional as F

    saved = []
    losses: list[float] = []
    for step in range(1, steps + 1):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step)
        x, y = next(batches)
        loss = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % every == 0 or step == steps:
            mean = sum(losses[-every:]) / len(losses[-every:])
            log(f"  step {step}: loss {mean:.3f} (nats/byte)")
            saved.append(save(step, mean))
    return saved


def make(out: Path, steps: int, every: int, ft_steps: int, ft_every: int, d_model: int,
         n_layer: int, threads: int) -> dict:  # fmt: skip
    """Train, fine-tune and export; return the manifest (also written to out/manifest.json)."""
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    ctx, batch, n_head = 128, 16, 4
    a, b = corpus_a(), corpus_b()
    model = build_model(d_model, n_layer, n_head, ctx)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: byte GPT, d_model {d_model}, {n_layer} layers, {n_params:,} parameters")
    print(f"corpus A {len(a):,} bytes, corpus B {len(b):,} bytes")
    gen = torch.Generator().manual_seed(SEED)
    warm, peak, floor = 20, 1e-3, 1e-4

    def lr_pre(step: int) -> float:
        if step <= warm:
            return peak * step / warm
        frac = (step - warm) / max(1, steps - warm)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * frac))

    opt = torch.optim.AdamW(model.parameters(), lr=peak, betas=(0.9, 0.95), weight_decay=0.1)
    t0 = time.perf_counter()

    def save_pre(step: int, loss: float) -> dict:
        files = _export(out / f"pre-{step:06d}", model, opt)
        return {"name": f"pre-{step:06d}", "step": step, "loss": loss, "files": files}

    print("pretraining on corpus A:")
    series = _train(model, opt, _batches(a, batch, ctx, gen), steps, lr_pre, every, save_pre,
                    print)  # fmt: skip
    t_pre = time.perf_counter() - t0
    opt_ft = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.95), weight_decay=0.1)

    def save_ft(step: int, loss: float) -> dict:
        files = _export(out / f"ft-{step:06d}", model, opt_ft)
        return {"name": f"ft-{step:06d}", "step": step, "loss": loss, "files": files}

    print("fine-tuning on corpus B (lr 5e-5):")
    gen_b = torch.Generator().manual_seed(SEED + 1)
    finetune = _train(model, opt_ft, _batches(b, batch, ctx, gen_b), ft_steps, lambda s: 5e-5,
                      ft_every, save_ft, print)  # fmt: skip
    manifest = {
        "model": {"kind": "byte-level GPT (pre-LN, learned positions, untied head)",
                  "d_model": d_model, "n_layer": n_layer, "n_head": n_head, "context": ctx,
                  "parameters": n_params},
        "corpus_a": {"what": "Python language reference (pydoc_data.topics, Python "
                             f"{sys.version.split()[0]})", "bytes": len(a),
                     "sha256": hashlib.sha256(a).hexdigest()},
        "corpus_b": {"what": "licence texts of the venv's packages (*.dist-info), deduplicated",
                     "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()},
        "pretrain": {"steps": steps, "every": every, "batch": batch, "optimizer":
                     "AdamW lr 1e-3 (20 warmup steps, cosine to 1e-4), betas (0.9, 0.95), wd 0.1",
                     "seconds": round(t_pre, 1)},
        "finetune": {"steps": ft_steps, "every": ft_every, "base": series[-1]["name"],
                     "optimizer": "fresh AdamW lr 5e-5 constant, betas (0.9, 0.95), wd 0.1",
                     "seconds": round(time.perf_counter() - t0 - t_pre, 1)},
        "threads": threads, "seed": SEED, "torch": torch.__version__,
        "bf16": "weights-bf16: the float32 weights rounded to bfloat16 (round to nearest even)",
        "series": series, "finetunes": finetune,
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    paths = [f for c in series + finetune for f in c["files"].values()]
    (out / "READY").write_text("\n".join([str(out / "manifest.json"), *paths]) + "\n")
    return manifest


def load(out: Path = OUT) -> dict:
    """The manifest of a finished run (see make); raises if the data has not been made."""
    if not (out / "READY").exists():
        raise FileNotFoundError(f"no delta workloads in {out}: run benchmarks/delta_workloads.py")
    return json.loads((out / "manifest.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--steps", type=int, default=400, help="pretraining steps")
    ap.add_argument("--every", type=int, default=50, help="checkpoint every N pretraining steps")
    ap.add_argument("--ft-steps", type=int, default=100, help="fine-tuning steps")
    ap.add_argument("--ft-every", type=int, default=25)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refresh", action="store_true", help="retrain even if READY exists")
    args = ap.parse_args(argv)
    if (args.out / "READY").exists() and not args.refresh:
        print(f"cached: {args.out} (--refresh rebuilds)")
    else:
        t0 = time.perf_counter()
        make(args.out, args.steps, args.every, args.ft_steps, args.ft_every, args.d_model,
             args.layers, args.threads)  # fmt: skip
        print(f"made in {time.perf_counter() - t0:.0f} s")
    print((args.out / "READY").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
