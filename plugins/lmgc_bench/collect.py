"""``lmgc collect``: train small models on real images and store gradient snapshots in Zarr.

Store layout (zarr v3)::

    grads.zarr/                      attrs: format, dataset, image_size, seed, ...
      <arch>/                        attrs: architecture, dataset, steps, loss, params, ...
        grads    float32 (n_snapshots, n_params), one chunk per snapshot

``params`` lists every parameter tensor in ``model.parameters()`` order with its name, shape,
offset and size in the flattened gradient vector (the layer boundaries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .models import ARCHITECTURES

FORMAT = "lmgc-bench-grads/1"
DEFAULT_ARCHS = ("convnet", "vgg", "resnet18", "vit")


def _set_determinism(seed: int, threads: int) -> None:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def train_and_snapshot(
    arch: str,
    *,
    steps: int = 200,
    every: int = 50,
    image_size: int = 16,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    threads: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train ``arch`` with Adam on the digit images for ``steps`` steps and return the float32
    gradient at every ``every``-th step (before that step's update), plus metadata."""
    import torch
    import torch.nn.functional as F

    from .models import build_model, load_digits_images

    _set_determinism(seed, threads)
    X, y = load_digits_images(image_size)
    model = build_model(arch, image_size=image_size)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    params = []
    offset = 0
    for name, p in model.named_parameters():
        params.append({"name": name, "shape": list(p.shape), "offset": offset, "size": p.numel()})
        offset += p.numel()
    snap_steps = list(range(0, steps, every))
    grads = np.empty((len(snap_steps), offset), dtype=np.float32)
    losses: list[float] = []
    perm = torch.randperm(len(X), generator=gen)
    pos = 0
    k = 0
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + batch_size > len(X):
            perm = torch.randperm(len(X), generator=gen)
            pos = 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        if k < len(snap_steps) and step == snap_steps[k]:
            flat = torch.cat([p.grad.detach().reshape(-1) for p in model.parameters()])
            grads[k] = flat.numpy()
            losses.append(float(loss.detach()))
            k += 1
        opt.step()
    with torch.no_grad():
        model.eval()
        acc = float((model(X).argmax(1) == y).float().mean())
    meta = {
        "architecture": arch,
        "dataset": "sklearn-digits",
        "image_size": image_size,
        "n_params": offset,
        "steps": snap_steps,
        "loss": losses,
        "train_steps": steps,
        "every": every,
        "batch_size": batch_size,
        "optimizer": "adam",
        "lr": lr,
        "seed": seed,
        "threads": threads,
        "final_train_accuracy": acc,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "torch_version": torch.__version__,
        "params": params,
    }
    return grads, meta


def collect(
    out: str | Path,
    archs: Sequence[str] = DEFAULT_ARCHS,
    *,
    steps: int = 200,
    every: int = 50,
    image_size: int = 16,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    threads: int = 1,
    log: Any = None,
) -> dict[str, Any]:
    """Train every architecture in ``archs`` and write its gradient snapshots to the Zarr store
    ``out`` (overwriting groups of the same name). Returns a summary per architecture."""
    import zarr

    for arch in archs:
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    if every < 1 or steps < 1:
        raise ValueError("steps and every must be >= 1")
    root = zarr.open_group(str(out), mode="a")
    root.attrs.update(
        {"format": FORMAT, "dataset": "sklearn-digits", "image_size": image_size, "seed": seed}
    )
    summary: dict[str, Any] = {}
    for arch in archs:
        grads, meta = train_and_snapshot(
            arch, steps=steps, every=every, image_size=image_size, batch_size=batch_size,
            lr=lr, seed=seed, threads=threads,
        )  # fmt: skip
        group = root.require_group(arch)
        if "grads" in group:
            del group["grads"]
        arr = group.create_array(
            "grads", shape=grads.shape, dtype="float32", chunks=(1, grads.shape[1])
        )
        arr[...] = grads
        group.attrs.update(meta)
        summary[arch] = {
            k: meta[k] for k in ("n_params", "steps", "final_train_accuracy", "train_seconds")
        }
        if log:
            log(
                f"{arch}: {meta['n_params']:,} params, {len(meta['steps'])} snapshots, "
                f"train acc {meta['final_train_accuracy']:.3f}, {meta['train_seconds']:.1f} s"
            )
    return summary


def list_store(path: str | Path) -> dict[str, dict[str, Any]]:
    """Architectures in a store made by :func:`collect` and their attributes."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    if root.attrs.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gradient store made by `lmgc collect`")
    return {name: dict(g.attrs) for name, g in sorted(root.groups())}


def load_snapshots(path: str | Path, arch: str) -> tuple[np.ndarray, dict[str, Any]]:
    """All snapshots of one architecture: ``(n_snapshots, n_params)`` float32 and metadata."""
    import zarr

    group = zarr.open_group(str(path), mode="r")[arch]
    return np.asarray(group["grads"][...], dtype=np.float32), dict(group.attrs)
