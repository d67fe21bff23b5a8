"""Layer identification (Kornblith et al., 2019, section 6.1), reproduced offline on MNIST-1D.

    python benchmarks/sanity_check.py [--nets 10] [--epochs 15] [--n 2000] [--k 10]

Trains --nets copies of a small plain CNN on MNIST-1D, seeds 0..nets-1, on the CPU:
Kornblith et al.'s Tiny-10 in one dimension (eight conv-BN-ReLU layers, widths 16 -> 32 ->
64, two strided, one unpadded, the last 1x1; global average pooling; a linear head).
Every copy sees the same --n held-out signals; the logits are left out, as in the
paper. For every ordered pair of copies (a, b) and every layer of a, a measure
identifies the layer of b most similar to it; its accuracy is the share of those picks
that are the corresponding layer.

Each measure is one ``gg.similarity_matrix`` call over all layers of all copies, so
per-layer work (unit rows, Gram factors, kNN graphs) is done once per layer; the time
printed is that call's. All five measures are symmetric, so the pick for layer j of b
against a reads column j of the (a, b) block.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import environment
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

import gpugraph as gg
from gpugraph.demo import accuracy, train

# Kornblith et al.'s Tiny-10 in one dimension: (out channels, kernel, stride, padding)
PLAN = [(16, 3, 1, 1), (16, 3, 1, 1), (32, 3, 2, 1), (32, 3, 1, 1), (32, 3, 1, 1),
        (64, 3, 2, 1), (64, 3, 1, 0), (64, 1, 1, 0)]


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TinyCnn(nn.Module):
    """Eight conv-BN-ReLU layers (widths 16 -> 32 -> 64, two strided, one unpadded, the last
    1x1), global average pooling and a linear head; plain, no shortcuts."""

    def __init__(self, classes: int = 10):
        super().__init__()
        layers, c = [], 1
        for width, kernel, stride, padding in PLAN:
            layers.append(ConvBlock(c, width, kernel, stride, padding))
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x[:, None, :]
        return self.fc(self.pool(self.features(x)))


def data(n_eval: int):
    """MNIST-1D: the standard 4000 training signals, and n_eval held-out signals drawn with
    another seed (the standard test split holds only 1000)."""
    args = get_dataset_args()
    d = make_dataset(args)
    held = get_dataset_args()
    held.seed, held.num_samples, held.train_split = 7, n_eval, 0.0
    h = make_dataset(held)
    t = lambda a, dt: torch.tensor(np.asarray(a), dtype=dt)  # noqa: E731
    return t(d["x"], torch.float32), t(d["y"], torch.int64), t(h["x_test"], torch.float32), t(h["y_test"], torch.int64)


def identification(values: np.ndarray, nets: int, layers: int) -> np.ndarray:
    """(layers,) share of ordered pairs (a, b) in which layer i of a picks layer i of b."""
    hits = np.zeros(layers)
    for a in range(nets):
        for b in range(nets):
            if a != b:
                block = values[a * layers : (a + 1) * layers, b * layers : (b + 1) * layers]
                hits += block.argmax(axis=1) == np.arange(layers)
    return hits / (nets * (nets - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--n", type=int, default=2000, help="held-out signals every layer is compared on")
    ap.add_argument("--k", type=int, default=10, help="k of the kNN-based measures")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(environment())
    x_train, y_train, x_eval, y_eval = data(args.n)
    print(f"MNIST-1D: {len(x_train)} training signals, {len(x_eval)} held-out signals compared")

    acts = {}
    for seed in range(args.nets):
        torch.manual_seed(seed)
        model = TinyCnn()
        t0 = time.perf_counter()
        train(model, x_train, y_train, args.epochs, seed, log=lambda *a: None)
        captured = gg.capture(model, (x_eval, y_eval), layers=[f"features.{i}" for i in range(len(PLAN))] + ["pool"])
        hidden = list(captured)  # logits excluded, as in the paper
        acts.update({f"net{seed}/{name}": captured[name] for name in hidden})
        print(f"  net {seed}: held-out accuracy {accuracy(model, x_eval, y_eval):.1%}, "
              f"trained in {time.perf_counter() - t0:.0f} s")
    layers = len(hidden)
    widths = ", ".join(f"{name} {acts['net0/' + name].shape[1]}" for name in hidden)
    print(f"{layers} layers per net (flattened widths): {widths}")

    measures = [
        ("dense LSim (GBS)", "lsim", None),
        (f"kNN LSim, k={args.k}", "lsim", args.k),
        (f"kNN overlap, k={args.k}", "knn_overlap", args.k),
        (f"mutual kNN, k={args.k}", "mutual_knn", args.k),
        ("linear CKA", "cka", None),
    ]
    pairs = args.nets * (args.nets - 1)
    print(f"\nlayer identification: {pairs} ordered pairs x {layers} layers = {pairs * layers} picks per measure")
    print(f"{'measure':<22}  {'accuracy':>8}  {'time (s)':>8}  per layer (%)")
    for label, measure, k in measures:
        t0 = time.perf_counter()
        m = gg.similarity_matrix(acts, measure=measure, k=k)
        elapsed = time.perf_counter() - t0
        per_layer = identification(m.values, args.nets, layers)
        print(f"{label:<22}  {per_layer.mean():8.1%}  {elapsed:8.1f}  "
              + " ".join(f"{100 * v:3.0f}" for v in per_layer))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
