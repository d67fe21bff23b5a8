"""Triangle and labelled-triangle (motif) counts on the union of a kNN graph."""

from __future__ import annotations

import numpy as np
import torch

from gpugraph._util.convert import label_codes
from gpugraph.graph.knngraph import KnnGraph, check_graph
from gpugraph.kernels import cuda as _kernels
from gpugraph.kernels import graph_cpu as _graph_cpu
from gpugraph.kernels.threads import use_threads


def triangles(g: KnnGraph, per_node: bool = False):
    """Number of triangles in the undirected, unweighted union graph of ``g`` (mode "max").

    Parameters
    ----------
    g : KnnGraph
    per_node : bool
        If True, return for every node the number of triangles it belongs to.

    Returns
    -------
    int, or (N,) int64 tensor on g's device
        Each triangle counted once; with ``per_node`` the entries sum to three times that.

    Notes
    -----
    Edges are oriented from lower to higher (degree, index) rank, so every triangle
    u < v < w is found exactly once as an oriented wedge u -> v -> w closed by u -> w, and
    no node has more than O(sqrt(m)) out-neighbours: O(m^1.5) time in the worst case, about
    O(N k^2) on kNN graphs.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g = gg.KnnGraph(torch.tensor([[1, 2], [2, 0], [0, 1]]), torch.ones(3, 2))
    >>> gg.triangles(g)
    1
    """
    check_graph(g)
    indptr, cols = _oriented_csr(g)
    if g.device.type == "cuda":
        total, nodes, _ = _kernels.triangle_count(indptr, cols, per_node=per_node)
        return nodes if per_node else total
    total, nodes, _ = _count(indptr.numpy(), cols.numpy(), per_node=per_node)
    return torch.from_numpy(nodes) if per_node else total


def motifs(g: KnnGraph, labels) -> dict[str, int]:
    """Triangles of the union graph of ``g`` classified by the labels of their three nodes.

    Returns ``{"same": ..., "pair": ..., "distinct": ...}``: triangles whose nodes all share
    one class, whose nodes fall in exactly two classes, and whose nodes are in three
    different classes (the labelled motifs of Chen et al., 2024). The three add up to
    ``triangles(g)``. Each triangle is found once, as in :func:`triangles`, and classified
    by its nodes' labels there.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g = gg.KnnGraph(torch.tensor([[1, 2], [2, 0], [0, 1]]), torch.ones(3, 2))
    >>> gg.motifs(g, ["cat", "cat", "dog"])
    {'same': 0, 'pair': 1, 'distinct': 0}

    References
    ----------
    Z. Chen et al., "Graph-Based Similarity of Deep Neural Networks", Neurocomputing 614
    (2024), doi:10.1016/j.neucom.2024.128722.
    """
    check_graph(g)
    codes, _ = label_codes(labels, g.n, g.device)
    return motifs_of(g, codes)


def motifs_of(g: KnnGraph, codes: torch.Tensor) -> dict[str, int]:
    """:func:`motifs` below its door: a checked graph and int64 class ``codes`` on its device."""
    indptr, cols = _oriented_csr(g)
    if g.device.type == "cuda":
        _, _, counts = _kernels.triangle_count(indptr, cols, labels=codes.contiguous())
    else:
        _, _, counts = _count(indptr.numpy(), cols.numpy(), labels=codes.numpy())
    return dict(zip(("same", "pair", "distinct"), counts))


def _oriented_csr(g: KnnGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The union graph oriented from lower to higher (degree, index) rank, as CSR
    (indptr, columns sorted within rows) on g's device."""
    if g.device.type == "cpu":
        recip, _ = g.reciprocity()
        indptr, cols = _graph_cpu.oriented_csr(g.indices.contiguous().numpy(), recip.numpy())
        return torch.from_numpy(indptr), torch.from_numpy(cols)
    return _oriented_csr_torch(g)


def _oriented_csr_torch(g: KnnGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_oriented_csr` in torch, for CUDA graphs."""
    rows, cols, _ = g.edges("max", weighted=False)  # both directions of every edge
    n = g.n
    degree = torch.bincount(rows, minlength=n)
    rank = degree * n + torch.arange(n, device=g.device)  # distinct, ordered by (degree, index)
    up = rank[rows] < rank[cols]
    rows, cols = rows[up], cols[up]
    order = torch.argsort(rows * n + cols)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=g.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return indptr, cols[order].contiguous()


def _count(indptr: np.ndarray, cols: np.ndarray, *, per_node: bool = False, labels=None, rows=None):
    """Triangles of an oriented CSR graph (rows sorted), the algorithm of graph.cu on the host
    (gpugraph/kernels/graph_cpu.py): for each oriented edge (u, v), the sorted intersection of the
    rows of u and v; each triangle is found once, at the edge from its lowest- to its
    middle-ranked node. With ``rows=(r0, r1)`` only the triangles found at edges leaving
    rows r0..r1 are counted (a share of the work).

    Returns (total, (N,) int64 per-node counts or None, [same, pair, distinct] or None).
    """
    r0, r1 = rows if rows is not None else (0, len(indptr) - 1)
    codes = np.ascontiguousarray(labels, dtype=np.int64) if labels is not None else np.zeros(0, np.int64)
    # work: each oriented edge merges two rows of about m / n entries
    work = len(cols) * max(1, 2 * len(cols) // max(1, len(indptr) - 1))
    total, nodes, kinds = _graph_cpu.count(indptr, cols, codes, per_node, labels is not None, r0, r1,
                                           use_threads(work))
    return int(total), nodes if per_node else None, kinds.tolist() if labels is not None else None
