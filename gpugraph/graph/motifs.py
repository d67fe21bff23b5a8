"""Triangle and labelled-triangle (motif) counts, transitivity and clustering, on the union
of a kNN graph or on any undirected Graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from gpugraph._util.types import Labels
from gpugraph.graph.edges import EdgeRows, check_any_graph, check_undirected, edge_rows, node_codes
from gpugraph.graph.knngraph import KnnGraph
from gpugraph.kernels import cuda as _kernels
from gpugraph.kernels import graph_cpu as _graph_cpu

if TYPE_CHECKING:
    from gpugraph.graph.graph import Graph


def triangles(g: KnnGraph | Graph, per_node: bool = False) -> int | torch.Tensor:
    """Number of triangles of an undirected graph: the union of a KnnGraph's lists (mode
    "max", unweighted), or an undirected Graph (its edges, whatever their weights).

    Parameters
    ----------
    g : KnnGraph or Graph
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
    >>> gg.triangles(gg.Graph.from_edges([0, 1, 2, 2], [1, 2, 0, 3]), per_node=True).tolist()
    [1, 1, 1, 0]
    """
    check_any_graph(g)
    check_undirected(g, "triangles")
    return _triangles(_union(g), per_node)


def _union(g) -> EdgeRows:
    """The edges of the undirected graph the counts read: a KnnGraph's union ("max") of its
    lists, a Graph as it is."""
    return edge_rows(g, "max" if isinstance(g, KnnGraph) else None)


def _triangles(edges: EdgeRows, per_node: bool):
    total, nodes, _ = _counts(*oriented_csr(edges), per_node=per_node)
    return nodes if per_node else total


def _counts(indptr: torch.Tensor, cols: torch.Tensor, *, per_node: bool = False, codes: torch.Tensor | None = None):
    """(total, per-node counts as an (N,) int64 tensor or None, [same, pair, distinct] or
    None) of an oriented CSR graph: the CUDA kernel for CUDA tensors, the compiled pass else."""
    if indptr.is_cuda:
        return _kernels.triangle_count(
            indptr, cols, labels=None if codes is None else codes.contiguous(), per_node=per_node
        )
    total, nodes, kinds = _count(
        indptr.numpy(), cols.numpy(), per_node=per_node, labels=None if codes is None else codes.numpy()
    )
    return total, torch.from_numpy(nodes) if per_node else None, kinds


def motifs(g: KnnGraph | Graph, labels: Labels) -> dict[str, int]:
    """Triangles of an undirected graph (as :func:`triangles` counts them) classified by the
    labels of their three nodes.

    Returns ``{"same": ..., "pair": ..., "distinct": ...}``: triangles whose nodes all share
    one class, whose nodes fall in exactly two classes, and whose nodes are in three
    different classes (the labelled motifs of Chen et al., 2024). The three add up to
    ``triangles(g)``. Each triangle is found once, as in :func:`triangles`, and classified
    by its nodes' labels there. ``labels``: per node, or a partition, as
    :func:`~gpugraph.modularity` takes them.

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
    check_any_graph(g)
    check_undirected(g, "motifs")
    codes, _ = node_codes(g, labels)
    return motifs_of(g, codes)


def motifs_of(g, codes: torch.Tensor) -> dict[str, int]:
    """:func:`motifs` below its door: a checked graph and int64 class ``codes`` on its device."""
    _, _, counts = _counts(*oriented_csr(_union(g)), codes=codes)
    return dict(zip(("same", "pair", "distinct"), counts, strict=True))


def clustering(g: KnnGraph | Graph) -> torch.Tensor:
    """The local clustering coefficient of every node of an undirected graph (as
    :func:`triangles` reads it; unweighted): 2 T_i / (d_i (d_i - 1)), the share of pairs of
    i's neighbours that are linked, 0 where d_i < 2. (N,) float64 on g's device; networkx's
    ``clustering(G)`` of the unweighted graph.

    Examples
    --------
    >>> import gpugraph as gg
    >>> gg.clustering(gg.Graph.from_edges([0, 1, 2, 2], [1, 2, 0, 3])).tolist()
    [1.0, 1.0, 0.3333333333333333, 0.0]
    """
    tri, degree = _triangles_and_degrees(g, per_node=True)
    pairs = degree * (degree - 1)
    return torch.where(pairs > 0, 2 * tri.to(torch.float64) / pairs.clamp(min=1), 0.0)


def transitivity(g: KnnGraph | Graph) -> float:
    """The transitivity of an undirected graph (as :func:`triangles` reads it; unweighted):
    3 x triangles / connected triples = sum_i T_i / sum_i d_i (d_i - 1) / 2, 0 without
    triples; networkx's ``transitivity(G)``.

    Examples
    --------
    >>> import gpugraph as gg
    >>> gg.transitivity(gg.Graph.from_edges([0, 1, 2, 2], [1, 2, 0, 3]))
    0.6
    """
    total, degree = _triangles_and_degrees(g, per_node=False)
    triples = int((degree * (degree - 1) // 2).sum())
    return 3 * total / triples if triples else 0.0


def _triangles_and_degrees(g, per_node: bool):
    """The triangles (per node, or their number) and the degrees (neighbours, each once) of
    the undirected graph."""
    check_any_graph(g)
    check_undirected(g, "clustering" if per_node else "transitivity")
    edges = _union(g)
    indptr, cols = oriented_csr(edges)
    total, nodes, _ = _counts(indptr, cols, per_node=per_node)
    # each undirected edge is once in the oriented graph: out of one end, into the other
    degree = torch.diff(indptr) + torch.bincount(cols, minlength=edges.n)
    return nodes if per_node else total, degree


def oriented_csr(edges: EdgeRows) -> tuple[torch.Tensor, torch.Tensor]:
    """The undirected graph of the edges (each edge once whichever way it is listed)
    oriented from lower to higher (degree, index) rank, as CSR (indptr, columns sorted
    within rows) on the edges' device."""
    if edges.device.type == "cpu":
        if edges.mode == "as is" and not edges.directed:  # a Graph: symmetric, rows sorted
            indptr, cols = _graph_cpu.oriented_symmetric_csr(edges.rows.numpy(), edges.cols.numpy())
        else:
            indptr, cols = _graph_cpu.oriented_csr(
                edges.rows.numpy(), edges.cols.contiguous().numpy(), edges.recip.contiguous().numpy()
            )
        return torch.from_numpy(indptr), torch.from_numpy(cols)
    return _oriented_csr_torch(edges)


def _oriented_csr_torch(edges: EdgeRows) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`oriented_csr` in torch, for CUDA graphs."""
    src, dst = edges.sources(), edges.cols
    keep = (dst >= 0) & (~edges.recip | (src < dst))  # each undirected edge once
    src, dst = src[keep], dst[keep]
    n = edges.n
    degree = torch.bincount(src, minlength=n) + torch.bincount(dst, minlength=n)
    rank = degree * n + torch.arange(n, device=src.device)  # distinct, ordered by (degree, index)
    up = rank[src] < rank[dst]
    rows, cols = torch.where(up, src, dst), torch.where(up, dst, src)
    order = torch.argsort(rows * n + cols)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=src.device)
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
    total, nodes, kinds = _graph_cpu.count(indptr, cols, codes, per_node, labels is not None, r0, r1, work=work)
    return int(total), nodes if per_node else None, kinds.tolist() if labels is not None else None
