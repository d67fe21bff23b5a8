"""Graph measures on the CPU: gpugraph against igraph and networkx on the same kNN graph.

    python benchmarks/bench_graph.py [--n 50000] [--dim 32] [--k 10] [--classes 10]

The graph is the exact k = 10 cosine kNN graph of clustered data. Times are medians of
--repeats runs (networkx: one run). gpugraph is timed cold (a fresh KnnGraph: whatever a
measure derives from it, such as the reciprocity of its edges that triangles need, is
computed inside the call; modularity in "mean" mode derives nothing) and warm (that work
cached on the graph, as when several measures run on one graph); igraph and networkx are timed on graphs
already built in their own formats, which is the warm case for them.
"""

from __future__ import annotations

import argparse

import igraph
import networkx as nx
import numpy as np
import torch
from _common import environment, median_time, row
from networkx.algorithms.community import modularity as nx_modularity

import gpugraph as gg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--permutations", type=int, default=1000, help="of the null model (default: %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, size=args.n)
    centres = rng.normal(size=(args.classes, args.dim))
    x = torch.tensor(centres[labels] + 1.5 * rng.normal(size=(args.n, args.dim)), dtype=torch.float32)
    g = gg.knn_graph(x, k=args.k)

    coo = g.to_scipy("mean").tocoo()
    upper = coo.row < coo.col
    edges = list(zip(coo.row[upper].tolist(), coo.col[upper].tolist(), strict=True))
    weights = coo.data[upper].tolist()
    ig = igraph.Graph(n=args.n, edges=edges)
    nxg = g.to_networkx("mean")
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in range(args.classes)]
    membership = labels.tolist()
    print(environment())
    print(f"N={args.n}, k={args.k}: {len(edges)} undirected edges; medians of {args.repeats}")

    def fresh():
        return gg.KnnGraph(g.indices, g.weights, validate=False)

    q = gg.modularity(g, labels)
    q_ig = ig.modularity(membership, weights=weights)
    q_nx = nx_modularity(nxg, communities, weight="weight")
    print(f"modularity: gpugraph {q:.12f}  igraph {q_ig:.12f}  networkx {q_nx:.12f}")
    t_cold = median_time(lambda: gg.modularity(fresh(), labels), args.repeats)
    t_warm = median_time(lambda: gg.modularity(g, labels), args.repeats)
    t_ig = median_time(lambda: ig.modularity(membership, weights=weights), args.repeats)
    t_nx = median_time(lambda: nx_modularity(nxg, communities, weight="weight"), 1, warmup=0)
    print(row("modularity", "time [s]", "vs igraph", "vs networkx"))
    print(row("gpugraph cold", f"{t_cold:.4f}", f"{t_ig / t_cold:.2f}x", f"{t_nx / t_cold:.0f}x"))
    print(row("gpugraph warm", f"{t_warm:.4f}", f"{t_ig / t_warm:.2f}x", f"{t_nx / t_warm:.0f}x"))
    print(row("igraph", f"{t_ig:.4f}"))
    print(row("networkx", f"{t_nx:.4f}"))

    union = g.to_scipy("max", weighted=False).tocoo()
    upper = union.row < union.col
    ig_union = igraph.Graph(
        n=args.n, edges=list(zip(union.row[upper].tolist(), union.col[upper].tolist(), strict=True))
    )
    nx_union = g.to_networkx("max", weighted=False)
    tri = gg.triangles(g)
    tri_ig = len(ig_union.list_triangles())
    tri_nx = sum(nx.triangles(nx_union).values()) // 3
    print(f"triangles: gpugraph {tri}  igraph {tri_ig}  networkx {tri_nx}")
    t_cold = median_time(lambda: gg.triangles(fresh()), args.repeats)
    t_warm = median_time(lambda: gg.triangles(g), args.repeats)
    t_ig = median_time(lambda: ig_union.list_triangles(), args.repeats)
    t_nx = median_time(lambda: nx.triangles(nx_union), 1, warmup=0)
    print(row("triangles", "time [s]", "vs igraph", "vs networkx"))
    print(row("gpugraph cold", f"{t_cold:.4f}", f"{t_ig / t_cold:.2f}x", f"{t_nx / t_cold:.0f}x"))
    print(row("gpugraph warm", f"{t_warm:.4f}", f"{t_ig / t_warm:.2f}x", f"{t_nx / t_warm:.0f}x"))
    print(row("igraph list_triangles", f"{t_ig:.4f}"))
    print(row("networkx", f"{t_nx:.4f}"))
    t_motifs = median_time(lambda: gg.motifs(g, labels), args.repeats)
    print(row("gpugraph motifs", f"{t_motifs:.4f}"), gg.motifs(g, labels))

    # the permutation null: P label permutations in passes of 64 over the edges, against P
    # separate modularity calls (gpugraph's own, warm) and igraph's, on the same permutations
    perms = args.permutations
    shuffled = [np.random.default_rng(0).permutation(labels) for _ in range(10)]
    t_null = median_time(lambda: gg.modularity_null(g, labels, permutations=perms), 3)
    t_one = median_time(lambda: [gg.modularity(g, s) for s in shuffled], 3) / len(shuffled)
    t_one_ig = median_time(lambda: [ig.modularity(s.tolist(), weights=weights) for s in shuffled], 3) / len(shuffled)
    print(row(f"null, {perms} permutations", "time [s]", "vs calls", "vs igraph calls"))
    print(
        row(
            "gpugraph modularity_null",
            f"{t_null:.4f}",
            f"{perms * t_one / t_null:.1f}x",
            f"{perms * t_one_ig / t_null:.1f}x",
        )
    )
    print(row(f"{perms} x gg.modularity", f"{perms * t_one:.4f}"))
    print(row(f"{perms} x igraph modularity", f"{perms * t_one_ig:.4f}"))


if __name__ == "__main__":
    main()
