"""Classifiers. Every model takes images in [0, 1] and returns logits: normalisation is its first
layer, so attacks never have to know a dataset's mean and std.

  MLP        fully connected, 28x28 grey          zoo: fmnist/mlp  (a third architecture for transfer)
  SmallCNN   28x28 grey, ~1.3M params            zoo: fmnist/cnn
  VGG        VGG-style 3x3 conv stacks, 28x28     zoo: fmnist/vgg  (the VAE-GAN purification paper used VGG16)
  ResNet18   32x32x3 (CIFAR-style stem)
  WideResNet WRN-28-10 by default, 32x32x3
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN_STD = {  # per-channel statistics of the training split
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class Normalize(nn.Module):
    """(x - mean) / std per channel: the first layer of every classifier, so that models take [0, 1] images."""
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def _norm(dataset: str) -> Normalize:
    key = dataset.removeprefix("synthetic-") if dataset.startswith("synthetic-") else dataset
    mean, std = MEAN_STD.get(key, MEAN_STD["fashion_mnist"])
    return Normalize(mean, std)


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm + ReLU, size-preserving."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MLP(nn.Module):
    """Two hidden layers of 512 and 256 units with dropout (~0.54M parameters for 28x28)."""

    def __init__(self, dataset: str = "fashion_mnist", num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 28, hidden=(512, 256), dropout: float = 0.2):
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)   # read by advlab.validate.check_fit
        self.norm = _norm(dataset)
        layers, d = [nn.Flatten()], in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        self.net = nn.Sequential(*layers, nn.Linear(d, num_classes))

    def forward(self, x):  # (N, C, H, W) -> (N, num_classes)
        return self.net(self.norm(x))


class SmallCNN(nn.Module):
    """A 5x5 stem, two 3x3 convs and a two-layer head for 1x28x28 inputs (~1.3M parameters)."""

    def __init__(self, dataset: str = "fashion_mnist", num_classes: int = 10, in_channels: int = 1, dropout: float = 0.3):
        super().__init__()
        self.input_shape = (in_channels, 28, 28)   # the head's 64 * 7 * 7 fixes the size; read by check_fit
        self.norm = _norm(dataset)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                                                 # (32, 14, 14)
            conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2),               # (64, 7, 7)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 7 * 7, 384),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(384, num_classes))

    def forward(self, x):  # (N, 1, 28, 28) in [0, 1] -> (N, num_classes)
        return self.head(self.features(self.norm(x)))


class VGG(nn.Module):
    """VGG-style net: blocks of 3x3 conv+BN+ReLU separated by max-pooling, then an MLP head.

    The default widths (32-32-M-64-64-M-128-128-M) are VGG16's layout shrunk to fit 28x28 inputs and
    a CPU budget; pass `widths` for a wider one.
    """

    def __init__(self, dataset: str = "fashion_mnist", num_classes: int = 10, in_channels: int = 1,
                 widths=(32, 32, "M", 64, 64, "M", 128, 128, "M"), hidden: int = 256, dropout: float = 0.4):
        super().__init__()
        self.input_shape = (in_channels, None, None)   # any size >= 8 (adaptive pooling); read by check_fit
        self.norm = _norm(dataset)
        layers, c = [], in_channels
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn(c, w))
                c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(3)  # 28 -> 3 after three pools; also fixes other input sizes
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * 9, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.head(self.pool(self.features(self.norm(x))))


class BasicBlock(nn.Module):
    """Pre-activation residual block (used by ResNet18 and WideResNet)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.dropout:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o) + skip


class _ResNetBase(nn.Module):
    def _stage(self, cin, cout, n, stride, dropout=0.0):
        return nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout) for i in range(n)])

    def forward(self, x):  # (N, 3, 32, 32) -> (N, num_classes)
        o = self.stages(self.stem(self.norm(x)))
        o = F.relu(self.bn(o))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(o, 1), 1))


class ResNet18(_ResNetBase):
    """Pre-activation ResNet-18 with a 3x3 stem for 32x32 inputs (~11M parameters)."""

    def __init__(self, dataset: str = "cifar10", num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.norm = _norm(dataset)
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.stages = nn.Sequential(self._stage(64, 64, 2, 1), self._stage(64, 128, 2, 2),
                                    self._stage(128, 256, 2, 2), self._stage(256, 512, 2, 2))
        self.bn, self.fc = nn.BatchNorm2d(512), nn.Linear(512, num_classes)


class WideResNet(_ResNetBase):
    """WRN-depth-width (Zagoruyko & Komodakis); WRN-28-10 (~36M parameters) by default."""

    def __init__(self, dataset: str = "cifar10", num_classes: int = 10, in_channels: int = 3,
                 depth: int = 28, width: int = 10, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth: must be 6n+4 (e.g. 28), got {depth}")
        n, w = (depth - 4) // 6, [16, 16 * width, 32 * width, 64 * width]
        self.norm = _norm(dataset)
        self.stem = nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False)
        self.stages = nn.Sequential(self._stage(w[0], w[1], n, 1, dropout), self._stage(w[1], w[2], n, 2, dropout),
                                    self._stage(w[2], w[3], n, 2, dropout))
        self.bn, self.fc = nn.BatchNorm2d(w[3]), nn.Linear(w[3], num_classes)


ARCHITECTURES = {"mlp": MLP, "cnn": SmallCNN, "vgg": VGG, "resnet18": ResNet18, "wrn": WideResNet}


def build(arch: str, dataset: str = "fashion_mnist", **kwargs) -> nn.Module:
    """A fresh (untrained) model by architecture name: 'mlp', 'cnn', 'vgg', 'resnet18' or 'wrn'."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    from advlab.data import info
    i = info(dataset)
    if arch == "mlp":
        kwargs.setdefault("image_size", i.shape[1])
    return ARCHITECTURES[arch](dataset=dataset, num_classes=i.num_classes, in_channels=i.shape[0], **kwargs)


def num_params(model: nn.Module) -> int:
    """The number of parameters of `model`."""
    return sum(p.numel() for p in model.parameters())
