"""The networks of the similarity experiments (sanity_check.py, stitching.py, transfer.py):
1-D analogues of the CNN, ResNet-18 and VGG-16 of the GBS paper, for MNIST-1D, trained
offline on the CPU and cached on disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

from gpugraph.models.training import accuracy, fit
from gpugraph.tools.demo import ResBlock1d

CACHE = Path(__file__).resolve().parent / "cache"  # trained weights; created on first use, not in git

# Kornblith et al.'s Tiny-10 in one dimension: (out channels, kernel, stride, padding)
TINY_PLAN = [
    (16, 3, 1, 1),
    (16, 3, 1, 1),
    (32, 3, 2, 1),
    (32, 3, 1, 1),
    (32, 3, 1, 1),
    (64, 3, 2, 1),
    (64, 3, 1, 0),
    (64, 1, 1, 0),
]


class ConvBlock(nn.Module):
    """conv-BN-ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class _Net(nn.Module):
    """features -> global average pool -> head; signals (B, L) get a channel axis."""

    def forward(self, x):
        if x.dim() == 2:
            x = x[:, None, :]
        return self.fc(self.pool(self.features(x)))


class TinyCnn(_Net):
    """Eight conv-BN-ReLU layers (widths 16 -> 32 -> 64, two strided, one unpadded, the last
    1x1), global average pooling and a linear head; plain, no shortcuts."""

    def __init__(self, classes: int = 10):
        super().__init__()
        layers, c = [], 1
        for width, kernel, stride, padding in TINY_PLAN:
            layers.append(ConvBlock(c, width, kernel, stride, padding))
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(c, classes)


class ResNet18(_Net):
    """ResNet-18 in one dimension: a conv-BN-ReLU stem, four stages of two basic blocks
    (widths w, 2w, 4w, 8w; the first block of stages 2-4 halves the length: 40 -> 5)."""

    def __init__(self, classes: int = 10, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        blocks = [ConvBlock(1, w[0])]
        c = w[0]
        for stage, out in enumerate(w):
            blocks += [ResBlock1d(c, out, stride=1 if stage == 0 else 2), ResBlock1d(out, out)]
            c = out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(c, classes)


class Vgg16(_Net):
    """VGG-16 in one dimension: 13 conv-BN-ReLU layers in stages of 2, 2, 3, 3, 3 (widths w,
    2w, 4w, 8w, 8w), max-pooling after the first four (40 -> 2), then a classifier of two
    hidden linear layers and a head."""

    def __init__(self, classes: int = 10, width: int = 8):
        super().__init__()
        plan = [(width, 2), (2 * width, 2), (4 * width, 3), (8 * width, 3), (8 * width, 3)]
        layers, c = [], 1
        for stage, (out, count) in enumerate(plan):
            for _ in range(count):
                layers.append(ConvBlock(c, out))
                c = out
            if stage < 4:
                layers.append(nn.MaxPool1d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c), nn.ReLU()
        )
        self.fc = nn.Linear(c, classes)


ARCHS = {"cnn": TinyCnn, "resnet18": ResNet18, "vgg16": Vgg16}


def hook_points(model: nn.Module, protocol: str) -> list[str]:
    """Layer names of a protocol. "authors" (the GBS code): every convolution's raw output
    (before BN) on the main path (ResNet shortcut projections left out). "ours": the output
    of each conv-BN-ReLU layer or residual block, and of the pooled hidden layers; never
    the logits."""
    if protocol == "authors":
        return [name for name, m in model.named_modules() if isinstance(m, nn.Conv1d) and "shortcut" not in name]
    if protocol != "ours":
        raise ValueError(f"protocol must be 'authors' or 'ours', got {protocol!r}")
    names = [f"features.{i}" for i, m in enumerate(model.features) if not isinstance(m, nn.MaxPool1d)]
    if isinstance(model, Vgg16):
        return [*names, "pool.3", "pool.5"]  # the two hidden linear layers after their ReLU
    return [*names, "pool"]


def mnist1d(n_eval: int, seed: int = 7):
    """MNIST-1D: the standard 4000 training signals (x, y), and n_eval further signals drawn
    with another seed (the standard test split holds only 1000), as float32 / int64."""
    d = make_dataset(get_dataset_args())
    held = get_dataset_args()
    held.seed, held.num_samples, held.train_split = seed, n_eval, 0.0
    h = make_dataset(held)
    x, x_eval = (torch.tensor(np.asarray(a), dtype=torch.float32) for a in (d["x"], h["x_test"]))
    y, y_eval = (torch.tensor(np.asarray(a), dtype=torch.int64) for a in (d["y"], h["y_test"]))
    return x, y, x_eval, y_eval


def trained(
    arch: str, seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int, tag: str = "mnist1d", log=print, **kwargs
) -> nn.Module:
    """``ARCHS[arch]`` trained on (x, y) from seed ``seed``: loaded from CACHE when a run with
    the same arch, tag, seed and epochs saved it, else trained (gpugraph.models.training.fit) and
    saved (written, then renamed, so a cut run leaves no half file). Returned in eval mode."""
    torch.manual_seed(seed)
    model = ARCHS[arch](**kwargs)
    path = CACHE / f"{arch}-{tag}-seed{seed}-e{epochs}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    t0 = time.perf_counter()
    fit(model, x, y, epochs, seed=seed, log=None)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    if log is not None:
        log(
            f"  trained {arch} seed {seed} ({tag}) in {time.perf_counter() - t0:.0f} s, "
            f"training accuracy {accuracy(model, x, y):.1%}"
        )
    return model.eval()
