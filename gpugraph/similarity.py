"""Similarity between representations of the same samples, through their graphs."""

from __future__ import annotations

import torch

from gpugraph.knn import KnnGraph


def knn_overlap(g1: KnnGraph, g2: KnnGraph) -> float:
    """Mean Jaccard overlap of the neighbour sets of two kNN graphs on the same N nodes.

    overlap = (1/N) sum_i |N1(i) & N2(i)| / |N1(i) | N2(i)|, in [0, 1]; 1 when every node
    has the same neighbours in both. The graphs may have different k.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g1 = gg.KnnGraph(torch.tensor([[1, 2], [0, 2], [0, 1]]), torch.ones(3, 2))
    >>> g2 = gg.KnnGraph(torch.tensor([[1], [0], [0]]), torch.ones(3, 1))
    >>> gg.knn_overlap(g1, g2)
    0.5
    """
    for name, g in (("g1", g1), ("g2", g2)):
        if not isinstance(g, KnnGraph):
            raise TypeError(f"{name} must be a KnnGraph, got {type(g).__name__}")
    if g1.n != g2.n:
        raise ValueError(
            f"the graphs must be over the same nodes: g1 has N={g1.n}, g2 has N={g2.n}"
        )
    b = g2.indices.to(g1.device)
    shared = torch.zeros(g1.n, dtype=torch.int64, device=g1.device)
    step = max(1, (1 << 22) // (g1.k * g2.k))
    for r0 in range(0, g1.n, step):
        a = g1.indices[r0 : r0 + step]  # (c, k1)
        shared[r0 : r0 + step] = (a[:, :, None] == b[r0 : r0 + step, None, :]).sum(dim=(1, 2))
    union = g1.k + g2.k - shared
    return float((shared.double() / union).mean())
