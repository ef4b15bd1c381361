"""Small versions of the architecture families the LM-GC paper collects gradients from.

The paper trains a ConvNet, VGG-16, ResNet-18 and ViT on MNIST / CIFAR-10 / TinyImageNet. Here
the same families are shrunk (narrower, shallower) so that a few hundred steps train in a minute
on a 2-core CPU; what matters for compression is that the gradients have the *structure* of those
families (convolutions, batch norm, residual skips, attention, layer norm, embeddings).

torch is imported by the functions of this module only, never at package import.
"""

from __future__ import annotations

from typing import Any

ARCHITECTURES = ("convnet", "vgg", "resnet18", "vit", "mlp")
"""Names accepted by :func:`build_model` (``mlp`` matches /work/shared's reference data)."""


def load_digits_images(size: int = 16) -> tuple[Any, Any]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images, shipped in the wheel),
    scaled to [0, 1] and upsampled bilinearly to ``size`` x ``size``. Returns torch tensors
    ``X`` of shape ``(N, 1, size, size)`` and ``y`` of shape ``(N,)``."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    X = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    if size != 8:
        X = F.interpolate(X, size=(size, size), mode="bilinear", align_corners=False)
    X = (X - 0.5) / 0.5
    return X.contiguous(), torch.tensor(labels, dtype=torch.long)


def build_model(arch: str, image_size: int = 16, n_classes: int = 10, in_ch: int = 1) -> Any:
    """A small model of family ``arch`` (see :data:`ARCHITECTURES`)."""
    import torch
    from torch import nn

    class ConvNet(nn.Module):
        """The paper's simple ConvNet: 3 conv layers (ReLU, max-pool) and a linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(in_ch, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            )  # fmt: skip
            self.head = nn.Linear(32 * 4, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x).flatten(1))

    def vgg() -> nn.Module:
        """VGG-style: stacks of 3x3 conv + batch norm + ReLU, max-pool between stages, an MLP
        classifier (VGG-16's cfg with every width divided by 8 and one conv fewer per stage)."""
        cfg = [8, "M", 16, "M", 32, 32, "M", 64, 64]
        layers: list[nn.Module] = []
        c = in_ch
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return nn.Sequential(
            *layers, nn.Linear(c, 64), nn.ReLU(), nn.Dropout(0.0), nn.Linear(64, n_classes)
        )

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + self.shortcut(x))

    class ResNet18(nn.Module):
        """ResNet-18's layout (stem, 4 stages x 2 basic blocks, batch norm, skips) at width 8."""

        def __init__(self, width: int = 8) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            blocks: list[nn.Module] = []
            c = width
            for i, w in enumerate((width, 2 * width, 4 * width, 8 * width)):
                stride = 1 if i == 0 else 2
                blocks += [BasicBlock(c, w, stride), BasicBlock(w, w, 1)]
                c = w
            self.layers = nn.Sequential(*blocks)
            self.fc = nn.Linear(c, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.layers(torch.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))

    class ViT(nn.Module):
        """A small Vision Transformer: patch embedding, class token, learned positions,
        pre-norm encoder blocks (multi-head attention + GELU MLP), linear head."""

        def __init__(self, patch: int = 4, dim: int = 64, depth: int = 3, heads: int = 4) -> None:
            super().__init__()
            n = (image_size // patch) ** 2
            self.embed = nn.Conv2d(in_ch, dim, patch, patch)
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True,
            )  # fmt: skip
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
            return self.head(self.norm(self.encoder(t))[:, 0])

    def mlp() -> nn.Module:
        d = in_ch * image_size * image_size
        return nn.Sequential(
            nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, n_classes),
        )  # fmt: skip

    builders = {"convnet": ConvNet, "vgg": vgg, "resnet18": ResNet18, "vit": ViT, "mlp": mlp}
    if arch not in builders:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return builders[arch]()
