"""Triangle and labelled-triangle (motif) counts on the union of a kNN graph."""

from __future__ import annotations

import numpy as np
import torch

from gpugraph import _kernels
from gpugraph._tensor import label_codes
from gpugraph.graph import KnnGraph, check_graph


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
    indptr, cols = _oriented_csr(g)
    if g.device.type == "cuda":
        _, _, counts = _kernels.triangle_count(indptr, cols, labels=codes.contiguous())
    else:
        _, _, counts = _count(indptr.numpy(), cols.numpy(), labels=codes.numpy())
    return dict(zip(("same", "pair", "distinct"), counts))


def _oriented_csr(g: KnnGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """The union graph oriented from lower to higher (degree, index) rank, as CSR
    (indptr, columns sorted within rows) on g's device."""
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


_WEDGES = 1 << 22  # wedges examined at once: bounded temporaries
_MARKS = 1 << 24  # entries of the membership table: out-rows of a span of sources, N each


def _count(indptr: np.ndarray, cols: np.ndarray, *, per_node: bool = False, labels=None, rows=None):
    """Triangles of an oriented CSR graph (rows sorted), the algorithm of graph.cu on the host.

    A triangle u < v < w (by rank) is the wedge u -> v -> w closed by u -> w: for each
    oriented edge (u, v), each out-neighbour w of v is looked up in u's row. The rows of a
    span of sources are marked in a boolean table (source - first, w) of at most _MARKS
    entries, so each look-up is one read; wedges are taken in chunks of at most _WEDGES.
    Memory is O(m + _MARKS + chunk), never a wedge matrix.

    With ``rows=(r0, r1)`` only the triangles found at edges leaving rows r0..r1 are
    counted (a share of the work: every triangle is found at exactly one edge).

    Returns (total, (N,) int64 per-node counts or None, [same, pair, distinct] or None).
    """
    n = len(indptr) - 1
    m = len(cols)
    out_degree = np.diff(indptr)
    src = np.repeat(np.arange(n, dtype=np.int64), out_degree)  # (m,)
    work = out_degree[cols]  # (m,) wedges u -> v -> * at each edge
    ends = np.cumsum(work)
    span = max(1, min(n, _MARKS // max(1, n)))  # sources whose rows are marked at once
    marks = np.zeros(span * n, dtype=bool)  # (span, N) flattened
    total = 0
    nodes = np.zeros(n, dtype=np.int64) if per_node else None
    motif = np.zeros(3, dtype=np.int64) if labels is not None else None
    e0, m = (int(indptr[rows[0]]), int(indptr[rows[1]])) if rows is not None else (0, m)
    while e0 < m:
        u0 = int(src[e0])
        e1 = int(np.searchsorted(ends, ends[e0] - work[e0] + _WEDGES, side="right"))
        e1 = max(e0 + 1, min(e1, m, int(indptr[min(n, u0 + span)])))  # sources u0 .. u0 + span - 1
        lo, hi = int(indptr[u0]), int(indptr[src[e1 - 1] + 1])  # their whole rows
        slots = (src[lo:hi] - u0) * n + cols[lo:hi]
        marks[slots] = True
        cnt = work[e0:e1]  # (c,)
        u = np.repeat(src[e0:e1], cnt)  # (W,)
        v = np.repeat(cols[e0:e1], cnt)  # (W,)
        offset = np.arange(len(u)) - np.repeat(np.cumsum(cnt) - cnt, cnt)  # position in v's row
        w = cols[indptr[v] + offset]  # (W,)
        hit = marks[(u - u0) * n + w]  # the wedge is closed by u -> w
        marks[slots] = False
        u, v, w = u[hit], v[hit], w[hit]
        total += len(u)
        if per_node:
            nodes += np.bincount(u, minlength=n) + np.bincount(v, minlength=n) + np.bincount(w, minlength=n)
        if labels is not None:
            lu, lv, lw = labels[u], labels[v], labels[w]
            same = int(((lu == lv) & (lv == lw)).sum())
            distinct = int(((lu != lv) & (lv != lw) & (lu != lw)).sum())
            motif += (same, len(u) - same - distinct, distinct)
        e0 = e1
    return total, nodes, motif.tolist() if labels is not None else None
