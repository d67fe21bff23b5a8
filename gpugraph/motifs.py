"""Triangle and labelled-triangle (motif) counts on the union of a kNN graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch

from gpugraph import _kernels
from gpugraph._tensor import label_codes
from gpugraph.knn import KnnGraph


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
    _check_graph(g)
    if g.device.type == "cuda":
        total, nodes, _ = _kernels.triangle_count(*_oriented_csr(g), per_node=per_node)
        return nodes if per_node else total
    rows, cols = _union_edges(g)
    if per_node:
        return torch.from_numpy(_count(rows, cols, g.n, per_node=True)).to(g.device)
    return _count(rows, cols, g.n)


def motifs(g: KnnGraph, labels) -> dict[str, int]:
    """Triangles of the union graph of ``g`` classified by the labels of their three nodes.

    Returns ``{"same": ..., "pair": ..., "distinct": ...}``: triangles whose nodes all share
    one class, whose nodes fall in exactly two classes, and whose nodes are in three
    different classes (the labelled motifs of Chen et al., 2024). The three add up to
    ``triangles(g)``.

    A triangle has 3 same-class edges (all one class), 1 (two classes) or 0 (three classes),
    never 2. So "same" is the triangle count of the subgraph of same-class edges, "distinct"
    that of the subgraph of cross-class edges, and "pair" the rest: three counts, no
    enumeration.

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
    _check_graph(g)
    codes, _ = label_codes(labels, g.n, g.device)
    if g.device.type == "cuda":
        _, _, (same, pair, distinct) = _kernels.triangle_count(*_oriented_csr(g), labels=codes.contiguous())
        return {"same": same, "pair": pair, "distinct": distinct}
    rows, cols = _union_edges(g)
    codes = codes.numpy()
    same_class = codes[rows] == codes[cols]
    total = _count(rows, cols, g.n)
    same = _count(rows[same_class], cols[same_class], g.n)
    distinct = _count(rows[~same_class], cols[~same_class], g.n)
    return {"same": same, "pair": total - same - distinct, "distinct": distinct}


def _check_graph(g) -> None:
    if not isinstance(g, KnnGraph):
        raise TypeError(f"g must be a KnnGraph (from gpugraph.knn_graph), got {type(g).__name__}")


def _union_edges(g: KnnGraph) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every edge of the union graph, as host arrays."""
    rows, cols, _ = g._edges("max", weighted=False)
    return rows.cpu().numpy(), cols.cpu().numpy()


def _oriented_csr(g: KnnGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The union graph oriented from lower to higher (degree, index) rank, as CSR
    (indptr, columns sorted within rows) on g's device."""
    rows, cols, _ = g._edges("max", weighted=False)  # both directions of every edge
    n = g.n
    degree = torch.bincount(rows, minlength=n)
    rank = degree * n + torch.arange(n, device=g.device)  # distinct, ordered by (degree, index)
    up = rank[rows] < rank[cols]
    rows, cols = rows[up], cols[up]
    order = torch.argsort(rows * n + cols)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=g.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return indptr, cols[order].contiguous()


def _count(rows: np.ndarray, cols: np.ndarray, n: int, per_node: bool = False):
    """Triangles of the undirected graph given by both directions of each edge."""
    degree = np.bincount(rows, minlength=n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), degree))] = np.arange(n)
    up = rank[rows] < rank[cols]
    ones = np.ones(int(up.sum()), dtype=np.int64)
    a = scipy.sparse.csr_array((ones, (rows[up], cols[up])), shape=(n, n))  # oriented
    closed = (a @ a) * a  # [u, w]: wedges u -> v -> w closed by u -> w
    if not per_node:
        return int(closed.sum())
    middle = (a.T @ a) * a  # [v, w]: wedges v <- u -> w closed by v -> w
    return closed.sum(axis=1) + closed.sum(axis=0) + middle.sum(axis=1)
