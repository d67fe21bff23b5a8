"""Modularity curve in the paper's protocol: gpugraph against the authors' method, same run.

    python benchmarks/bench_curve.py [--layers 4] [--n 500] [--repeats 5] [--k 3]

Protocol of Lu et al. (2022): per layer, 5 disjoint subsets of 500 samples, k = 3, graph
(W + W^T)/2, modularity against the labels. The reference re-implements the authors'
method: a dense N x N cosine matrix, the top-k of each row picked by a Python heap loop,
and networkx's modularity. Activations come from the demo's residual CNN on MNIST-1D
(trained for 4 epochs), so the layers have the widths of a real network (1280 to 2048).
"""

from __future__ import annotations

import argparse
import heapq
from functools import partial

import networkx as nx
import numpy as np
import torch
from _common import environment, median_time, row
from networkx.algorithms.community import modularity as nx_modularity

import gpugraph as gg
from gpugraph.studies.curves import subsets
from gpugraph.tools.demo import DemoNet, mnist1d_data, train


def authors_modularity(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Dense cosine matrix, per-row heap top-k, (W + W^T)/2, networkx modularity."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    n = len(x)
    w = np.zeros((n, n))
    for i in range(n):
        best = heapq.nlargest(k, ((s[i, j], j) for j in range(n) if j != i))
        for sim, j in best:
            w[i, j] = sim
    graph = nx.from_numpy_array((w + w.T) / 2)
    classes = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return nx_modularity(graph, classes, weight="weight")


def authors_curve(xs, labels, parts, k: int) -> list[float]:
    """The authors' modularity on each subset."""
    return [authors_modularity(xs[p], labels[p], k) for p in parts]


def grams(blocks) -> list:
    """Each subset's Gram matrix: the GEMM floor of the curve."""
    return [b @ b.T for b in blocks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4, help="layers timed with the reference (it is slow)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_train, y_train, _, _ = mnist1d_data()
    model = DemoNet()
    train(model, x_train, y_train, epochs=4, log=lambda *_: None)
    acts = gg.capture(model, (x_train, y_train))
    names = list(acts)[: args.layers]
    labels = acts.labels.numpy()
    parts = subsets(acts.n, args.n, args.repeats, seed=0)
    print(environment())
    print(f"paper protocol: {args.repeats} subsets of {args.n} samples, k={args.k}; time per layer")
    widths = (22, 12, 13, 10, 10, 13, 12)
    print(
        row(
            "layer (D)",
            "authors [s]",
            "gpugraph [s]",
            "speed-up",
            "|dQ|",
            "GEMM floor [s]",
            "over floor",
            widths=widths,
        )
    )
    ratios = []
    for name in names:
        x = acts[name]
        sub = {name: x}
        ours = gg.modularity_curve(sub, labels, k=args.k, n=args.n, repeats=args.repeats).values[:, 0]
        t_ours = median_time(partial(gg.modularity_curve, sub, labels, k=args.k, n=args.n, repeats=args.repeats))
        xs = x.double().numpy()
        ref = authors_curve(xs, labels, parts, args.k)
        t_ref = median_time(partial(authors_curve, xs, labels, parts, args.k), 1, warmup=0)
        diff = float(np.max(np.abs(np.asarray(ref) - ours)))
        ratios.append(t_ref / t_ours)
        # the floor: each subset's float32 Gram matrix X_p X_p^T (one 500-row tile, as the search computes it)
        blocks = [x[p].float().contiguous() for p in parts]
        t_gemm = median_time(partial(grams, blocks))
        print(
            row(
                f"{name} ({x.shape[1]})",
                f"{t_ref:.2f}",
                f"{t_ours:.4f}",
                f"{t_ref / t_ours:.0f}x",
                f"{diff:.1e}",
                f"{t_gemm:.4f}",
                f"{t_ours / t_gemm:.2f}x",
                widths=widths,
            )
        )
    print(f"median speed-up per layer: {np.median(ratios):.0f}x")


if __name__ == "__main__":
    main()
