"""Regenerates the reference gradients ``mlp_digits_grads.npy`` (7 snapshots x 85,002 float32):
a 64-256-256-10 MLP trained with Adam on scikit-learn's bundled 8x8 digits (real handwriting,
shipped inside the scikit-learn wheel), the gradient of every 75th step. Needs torch and
scikit-learn (``pip install 'lmgc[bench]'``); about 40 s on 2 CPU cores.

This is the project's shared reference file's own generator, kept here so that benchmarks and
docs that use it depend on nothing outside the repo and its packages; with torch 2.13 (CPU) it
reproduces the shared file bit for bit (its SHA-256 is ``SHA256``). Usage::

    python benchmarks/make_mlp_digits.py bench-out/mlp_digits_grads.npy
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

SHA256 = "c57e4f34802567b984c0b8d011d215e4ae299a83fc9e11072723f91b8c69a043"


def main(out: str) -> None:
    torch.manual_seed(1234)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    net = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    snaps, step = [], 0
    for _epoch in range(8):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            F.cross_entropy(net(X[idx]), y[idx]).backward()
            if step % 75 == 0:
                grads = [p.grad.flatten() for p in net.parameters()]
                snaps.append(torch.cat(grads).numpy().copy())
            opt.step()
            step += 1
    grads = np.stack(snaps).astype(np.float32)
    np.save(out, grads)
    print(grads.shape, f"exact zeros {(grads == 0).mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mlp_digits_grads.npy")
