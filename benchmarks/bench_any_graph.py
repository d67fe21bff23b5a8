"""The graph measures on any graph (gg.Graph) against igraph, on an Erdos-Renyi graph and a
power-law (Barabasi-Albert) graph of the same size.

    python benchmarks/bench_any_graph.py [--n 200000] [--m 5] [--repeats 7] [--threads 2]

Both graphs have n nodes and about n m edges; the Barabasi graph's degrees are skewed (a few
hubs of degree ~ sqrt(n m)), which is what makes triangle counting expensive. Each measure
runs on graphs already built in each library's format (construction is timed apart), its
result checked against igraph's, and timed interleaved with igraph's call: medians of
--repeats, and the ratio igraph / gpugraph (above 1: gpugraph faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import igraph
import numpy as np
import torch
from _common import environment

import gpugraph as gg


def interleaved(ours, reference, repeats: int) -> tuple[float, float]:
    ours(), reference()  # warm-up (numba compiles on first use)
    a, b = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ours()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        reference()
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--m", type=int, default=5, help="edges a node (default: %(default)s)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(environment())
    print(f"n = {args.n}, about {args.n * args.m} edges; medians of {args.repeats}, interleaved with igraph")
    print(f"{'graph':<10} {'measure':<22} {'gpugraph':>10} {'igraph':>10} {'igraph / ours':>14}")
    graphs = {
        "erdos": igraph.Graph.Erdos_Renyi(n=args.n, m=args.n * args.m, directed=False, loops=False),
        "barabasi": igraph.Graph.Barabasi(n=args.n, m=args.m, directed=False),
    }
    for name, ig in graphs.items():
        compare(name, ig, args, rng)


def compare(name: str, ig, args, rng) -> None:
    """Time gpugraph against igraph on one graph, after checking they agree."""
    ig.simplify()
    edges = np.array(ig.get_edgelist(), dtype=np.int64)
    weights = rng.uniform(0.1, 1.0, len(edges))
    ig.es["weight"] = weights.tolist()
    membership = rng.integers(0, args.classes, args.n)
    members = membership.tolist()
    src, dst, w = torch.from_numpy(edges[:, 0]), torch.from_numpy(edges[:, 1]), torch.from_numpy(weights)
    degree = np.array(ig.degree())
    print(
        f"{name:<10} {'(degrees)':<22} max {degree.max()}, mean {degree.mean():.1f}, "
        f"sum d^2 / n = {float((degree.astype(float) ** 2).mean()):.0f}"
    )

    def build():
        return gg.Graph.from_edges(src, dst, w, n=args.n)

    g = build()
    cases = [
        ("build from edges", build, lambda: igraph.Graph(n=args.n, edges=edges, edge_attrs={"weight": weights})),
        ("modularity", lambda: gg.modularity(g, membership), lambda: ig.modularity(members, weights="weight")),
        ("triangles", lambda: gg.triangles(g), lambda: ig.list_triangles()),
        ("transitivity", lambda: gg.transitivity(g), lambda: ig.transitivity_undirected()),
        ("local clustering", lambda: gg.clustering(g), lambda: ig.transitivity_local_undirected(mode="zero")),
    ]
    assert abs(gg.modularity(g, membership) - ig.modularity(members, weights="weight")) < 1e-12
    assert gg.triangles(g) == len(ig.list_triangles())
    assert abs(gg.transitivity(g) - ig.transitivity_undirected()) < 1e-12
    for measure, ours, reference in cases:
        a, b = interleaved(ours, reference, args.repeats)
        print(f"{name:<10} {measure:<22} {a * 1e3:8.1f}ms {b * 1e3:8.1f}ms {b / a:13.2f}x")


if __name__ == "__main__":
    main()
