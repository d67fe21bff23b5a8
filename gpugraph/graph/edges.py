"""The one view of a graph's edges that every measure reads, and the labels of its nodes.

Both a :class:`~gpugraph.Graph` and a :class:`~gpugraph.KnnGraph` become :class:`EdgeRows`:
CSR rows of directed edges, each with whether its reverse is listed and that weight (found
when first read: modularity in "mean" mode never needs it). One
compiled pass (CPU, gpugraph/kernels/graph_cpu.py) or one torch statement (elsewhere) of
each algorithm reads those, whichever graph they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from gpugraph._util.convert import label_codes
from gpugraph.graph.graph import Graph, rows_of
from gpugraph.graph.knngraph import KnnGraph, check_mode, symmetric_from

# ---- the view every measure reads --------------------------------------------------------


@dataclass(frozen=True)
class EdgeRows:
    """A graph's directed edges as CSR rows, what every measure reads.

    ``rows`` (N+1,) and ``cols`` (E,): node i's edges i -> cols[e] for e in rows[i]..rows[i+1],
    -1 an empty slot (kNN lists with fewer than k neighbours). ``weights``, ``recip`` (whether
    the reverse edge is listed) and ``partner`` (its weight), all (E,); ``pairs`` gives the
    last two when they are first read. ``mode``: how the edges give the adjacency A: "mean",
    "max" or "mutual" symmetrise kNN lists (see KnnGraph), "as is" takes edge i -> j as A_ij
    (a Graph). ``directed``: A is not symmetric.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    weights: torch.Tensor
    pairs: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    mode: str
    directed: bool

    @cached_property
    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pairs()

    @property
    def recip(self) -> torch.Tensor:
        return self._pairs[0]

    @property
    def partner(self) -> torch.Tensor:
        return self._pairs[1]

    @property
    def n(self) -> int:
        return len(self.rows) - 1

    @property
    def device(self) -> torch.device:
        return self.cols.device

    def sources(self) -> torch.Tensor:
        """(E,) the node each edge leaves."""
        return rows_of(self.rows)

    def mass(self, weighted: bool, clip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(fwd, rev), both (E,) float64: A_ij carried by edge e = i -> j, and A_ji where no
        edge carries it (a one-way kNN edge); 0 at empty slots. ``clip``: negative directed
        weights count 0, before any symmetrisation."""
        w, pw = self.weights, self.partner
        if clip:
            w, pw = w.clamp(min=0.0), pw.clamp(min=0.0)
        present = self.cols >= 0
        if self.mode == "as is":
            fwd = w.to(torch.float64) if weighted else present.to(torch.float64)
            return fwd * present, torch.zeros_like(fwd)
        fwd, rev = symmetric_from(w, self.recip, pw, self.mode, weighted, torch.float64)
        return fwd * present, rev * present


def edge_rows(g, mode: str | None = None) -> EdgeRows:
    """The :class:`EdgeRows` of a KnnGraph (symmetrised by ``mode``, default "mean") or of a
    Graph (as it is; ``mode`` must then be None)."""
    if isinstance(g, Graph):
        if mode is not None:
            raise ValueError(
                f"mode={mode!r} symmetrises the lists of a KnnGraph; a Graph is used as it is "
                "(build it undirected, or from a KnnGraph with g.to_graph(mode))"
            )

        # an undirected Graph lists every edge in both rows; the orientation reads this (a
        # directed Graph's is never read: the counts refuse directed graphs)
        def listed() -> tuple[torch.Tensor, torch.Tensor]:
            return torch.ones(len(g.indices), dtype=torch.bool, device=g.device), g.weights

        return EdgeRows(g.indptr, g.indices, g.weights, listed, "as is", g.directed)
    mode = "mean" if mode is None else mode
    check_mode(mode)

    def reciprocity() -> tuple[torch.Tensor, torch.Tensor]:  # computed once and kept by the graph
        recip, partner = g.reciprocity()
        return recip.reshape(-1), partner.reshape(-1)

    if g.device.type == "cpu":  # NumPy's: torch's would wake its thread pool, left spinning beside our passes
        rows = torch.from_numpy(np.arange(0, g.n * g.k + 1, g.k, dtype=np.int64))
    else:
        rows = torch.arange(0, g.n * g.k + 1, g.k, device=g.device)
    return EdgeRows(rows, g.indices.reshape(-1), g.weights.reshape(-1), reciprocity, mode, False)


def check_any_graph(g, name: str = "g"):
    if not isinstance(g, (KnnGraph, Graph)):
        raise TypeError(
            f"{name} must be a KnnGraph (from gpugraph.knn_graph) or a gpugraph.Graph, got {type(g).__name__}"
        )
    return g


def check_undirected(g, what: str) -> None:
    if isinstance(g, Graph) and g.directed:
        raise ValueError(f"{what} counts an undirected graph; this Graph is directed: pass g.to_undirected() (A + A^T)")


# ---- labels: values per node, or a partition ---------------------------------------------


def node_codes(g, labels) -> tuple[torch.Tensor, int]:
    """int64 class codes (N,) on g's device and the number of classes, from per-node
    ``labels`` (as :func:`gpugraph.modularity` takes them) or from a partition: an iterable
    of sets (or of lists, when there are not N of them) of nodes, every node in exactly one,
    as networkx's community functions return them (nodes by :attr:`Graph.names` if the graph
    has them, else by index)."""
    blocks = _as_partition(labels, g.n)
    if blocks is None:
        codes, classes = label_codes(labels, g.n, g.device)
        return codes, len(classes)
    names = getattr(g, "names", None)
    index = {name: i for i, name in enumerate(names)} if names is not None else None
    table = np.full(g.n, -1, dtype=np.int64)
    for c, block in enumerate(blocks):
        for node in block:
            i = _node_index(node, index, g.n)
            if table[i] >= 0:
                raise ValueError(
                    f"node {node!r} is in two blocks of the partition ({table[i]} and {c}); "
                    "a partition puts every node in exactly one"
                )
            table[i] = c
    missing = np.flatnonzero(table < 0)
    if len(missing):
        shown = [names[i] if names is not None else int(i) for i in missing[:5]]
        raise ValueError(
            f"{len(missing)} node(s) are in no block of the partition (e.g. "
            f"{', '.join(map(repr, shown))}); a partition covers every node"
        )
    return torch.from_numpy(table).to(g.device), len(blocks)


def _as_partition(labels, n: int) -> list | None:
    if isinstance(labels, (str, bytes, np.ndarray, torch.Tensor, dict)) or not isinstance(labels, Iterable):
        return None
    items = labels if isinstance(labels, (list, tuple)) else list(labels)
    if not items:
        return None
    if all(isinstance(b, (set, frozenset)) for b in items):
        return list(items)
    if len(items) != n and all(isinstance(b, (list, tuple, range)) for b in items):
        return list(items)
    return None


def _node_index(node, index: dict | None, n: int) -> int:
    if index is not None:
        if not isinstance(node, Hashable) or node not in index:
            raise ValueError(f"the partition names node {node!r}, which is not a node of the graph")
        return index[node]
    if isinstance(node, (bool, np.bool_)) or not isinstance(node, (int, np.integer)) or not 0 <= node < n:
        raise ValueError(f"the partition names node {node!r}; this graph's nodes are 0..{n - 1}")
    return int(node)


__all__ = ["EdgeRows", "check_any_graph", "check_undirected", "edge_rows", "node_codes"]
