"""Graph: any weighted graph, undirected or directed, in CSR form on a torch device.

The measures read a Graph and a :class:`~gpugraph.KnnGraph` alike, through the one view of
their edges in gpugraph/graph/edges.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gpugraph._util.convert import as_tensor
from gpugraph._util.errors import GpuGraphError
from gpugraph._util.types import ArrayLike, Device
from gpugraph.kernels import cuda as _kernels

if TYPE_CHECKING:
    import networkx as nx
    import scipy.sparse


class Graph:
    """A weighted graph of any degree sequence, in CSR form on a torch device.

    Node i's edges are ``indices[indptr[i]:indptr[i + 1]]`` (sorted, each neighbour once) with
    ``weights`` aligned. An undirected graph (the default) holds every edge in both rows,
    with one weight, so its CSR is the symmetric adjacency matrix A; a directed one
    (``directed=True``) holds edge i -> j in row i only. Self-loops are refused: no measure
    here defines them (remove them, e.g. ``A.setdiag(0)`` in SciPy, or
    ``G.remove_edges_from(nx.selfloop_edges(G))``).

    Build one with :meth:`from_edges`, :meth:`from_scipy`, :meth:`from_networkx`,
    :meth:`from_cugraph`, or :meth:`KnnGraph.to_graph <gpugraph.KnnGraph.to_graph>`;
    ``Graph(indptr, indices, weights)`` takes CSR arrays and sorts them, summing duplicate
    entries. ``names``: the nodes' own names (networkx's node keys), so that a partition may
    name them; None means 0..n-1.

    Examples
    --------
    >>> import gpugraph as gg
    >>> g = gg.Graph.from_edges([0, 1, 2, 2], [1, 2, 0, 3])   # a triangle and a pendant
    >>> g
    Graph(n=4, edges=4, undirected, device=cpu)
    >>> gg.triangles(g), gg.modularity(g, [{0, 1, 2}, {3}])
    (1, -0.03125)
    """

    __slots__ = ("_directed", "_indices", "_indptr", "_names", "_weights")
    _indptr: torch.Tensor
    _indices: torch.Tensor
    _weights: torch.Tensor
    _directed: bool
    _names: list | None

    def __init__(
        self,
        indptr: ArrayLike,
        indices: ArrayLike,
        weights: ArrayLike | None = None,
        *,
        directed: bool = False,
        names: Sequence[Hashable] | None = None,
        validate: bool = True,
    ):
        indptr, indices = as_tensor(indptr, "indptr"), as_tensor(indices, "indices")
        weights = None if weights is None else as_tensor(weights, "weights")
        if validate:
            indptr, indices, weights = _checked_csr(indptr, indices, weights, directed)
        elif weights is None:
            weights = torch.ones(len(indices), dtype=torch.float64, device=indices.device)
        names = None if names is None else list(names)
        if names is not None and len(names) != len(indptr) - 1:
            raise ValueError(f"names has {len(names)} entries for a graph of {len(indptr) - 1} nodes")
        values = {
            "_indptr": indptr,
            "_indices": indices,
            "_weights": weights,
            "_directed": bool(directed),
            "_names": names,
        }
        for slot, value in values.items():
            object.__setattr__(self, slot, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Graph is immutable: cannot set {name!r}; build a new graph instead")

    # ---- constructors --------------------------------------------------------------------

    @classmethod
    def from_edges(
        cls,
        src: ArrayLike,
        dst: ArrayLike,
        weights: ArrayLike | None = None,
        n: int | None = None,
        *,
        directed: bool = False,
        device: Device = None,
    ) -> Graph:
        """The graph of the edges src[e] -- dst[e] (weight ``weights[e]``, default 1).

        Undirected (the default): each pair given adds its weight to A_ij and A_ji, so a pair
        listed in both directions (as PyG's ``edge_index`` lists undirected graphs) counts
        twice; list each edge once. Duplicate edges sum. ``n``: the number of nodes (default
        1 + the largest index). ``device``: where the graph lives (default: the edges').
        """
        src, dst = as_tensor(src, "src"), as_tensor(dst, "dst")
        device = torch.device(device) if device is not None else src.device
        src, dst = _node_ids(src, "src").to(device), _node_ids(dst, "dst").to(device)
        if src.shape != dst.shape:
            raise ValueError(
                f"src and dst must have one entry an edge, got shapes {tuple(src.shape)} and {tuple(dst.shape)}"
            )
        w = _edge_weights(weights, len(src), device)
        size = (int(max(src.max(), dst.max())) + 1 if len(src) else 0) if n is None else _count_nodes(n)
        if len(src) and (int(min(src.min(), dst.min())) < 0 or int(max(src.max(), dst.max())) >= size):
            raise ValueError(
                f"edge ends must lie in [0, n) = [0, {size}); got {int(min(src.min(), dst.min()))} .. "
                f"{int(max(src.max(), dst.max()))}"
            )
        _refuse_loops(src, dst)
        if not directed:
            src, dst, w = torch.cat([src, dst]), torch.cat([dst, src]), torch.cat([w, w])
        indptr, indices, weights = coalesce(src, dst, w, size)
        return cls(indptr, indices, weights, directed=directed, validate=False)

    @classmethod
    def from_scipy(
        cls, a: scipy.sparse.sparray | scipy.sparse.spmatrix, *, directed: bool = False, device: Device = None
    ) -> Graph:
        """The graph of the square SciPy sparse matrix (or dense array) ``a``: A_ij is the
        weight of edge i -> j, every stored entry an edge (as networkx reads it). Undirected
        (the default): ``a`` must be symmetric."""
        import scipy.sparse

        if not scipy.sparse.issparse(a):
            a = np.asarray(a)
            if a.ndim != 2:
                raise ValueError(f"a must be a square matrix, got shape {a.shape}")
            a = scipy.sparse.coo_array(a)
        if a.shape[0] != a.shape[1]:
            raise ValueError(f"an adjacency matrix is square, got shape {a.shape}")
        coo = scipy.sparse.coo_array(a)
        values = coo.data if np.issubdtype(coo.data.dtype, np.floating) else coo.data.astype(np.float64)
        rows = torch.from_numpy(coo.row.astype(np.int64))
        cols = torch.from_numpy(coo.col.astype(np.int64))
        w = torch.from_numpy(np.ascontiguousarray(values))
        _refuse_loops(rows, cols)
        indptr, indices, weights = coalesce(rows, cols, w, a.shape[0])
        device = torch.device(device) if device is not None else torch.device("cpu")
        if not directed:
            _check_symmetric(
                indptr,
                indices,
                weights,
                "pass directed=True, or symmetrise it first ((a + a.T) / 2, or a.maximum(a.T))",
            )
        return cls(indptr.to(device), indices.to(device), weights.to(device), directed=directed, validate=False)

    @classmethod
    def from_networkx(cls, graph: nx.Graph, weight: str | None = "weight", *, device: Device = None) -> Graph:
        """The graph of a networkx Graph or DiGraph (multigraphs: parallel edges sum). Node
        i is the i-th node of ``graph.nodes``; their keys become :attr:`names`. ``weight``:
        the edge attribute read as the weight (missing: 1), None for 1 on every edge."""
        names = list(graph.nodes)
        index = {name: i for i, name in enumerate(names)}
        edges = list(graph.edges(data=True))
        src = torch.tensor([index[u] for u, _, _ in edges], dtype=torch.int64)
        dst = torch.tensor([index[v] for _, v, _ in edges], dtype=torch.int64)
        w = torch.tensor(
            [float(d.get(weight, 1.0)) if weight is not None else 1.0 for _, _, d in edges], dtype=torch.float64
        )
        loops = [names[int(i)] for i in src[src == dst][:5]]
        if loops:
            raise ValueError(
                f"the graph has self-loops (at nodes {', '.join(map(repr, loops))}); no measure here "
                "defines them: G.remove_edges_from(nx.selfloop_edges(G)) first"
            )
        g = cls.from_edges(src, dst, w, n=len(names), directed=graph.is_directed(), device=device)
        return cls(g.indptr, g.indices, g.weights, directed=g.directed, names=names, validate=False)

    @classmethod
    def from_cugraph(cls, graph: Any, weight: str | None = "weight") -> Graph:
        """The graph of a RAPIDS ``cugraph.Graph``, on the GPU (through DLPack, no copy to
        the host). Nodes must be numbered 0..n-1 (``renumber=False`` or the internal ids)."""
        frame = graph.view_edge_list()
        src, dst = (torch.from_dlpack(frame[c].astype("int64").to_dlpack()) for c in frame.columns[:2])
        w = torch.from_dlpack(frame[weight].astype("float64").to_dlpack()) if weight in frame.columns else None
        n = int(graph.number_of_vertices())
        return cls.from_edges(src, dst, w, n=n, directed=graph.is_directed(), device=src.device)

    # ---- what it is ----------------------------------------------------------------------

    @property
    def indptr(self) -> torch.Tensor:
        """(N + 1,) int64: node i's edges are at indptr[i]..indptr[i + 1]."""
        return self._indptr

    @property
    def indices(self) -> torch.Tensor:
        """(E,) int64 neighbours, sorted within each node's row."""
        return self._indices

    @property
    def weights(self) -> torch.Tensor:
        """(E,) floating-point edge weights aligned with :attr:`indices`."""
        return self._weights

    @property
    def directed(self) -> bool:
        return self._directed

    @property
    def names(self) -> list | None:
        """The nodes' names (from networkx), or None for 0..n-1."""
        return None if self._names is None else list(self._names)

    @property
    def n(self) -> int:
        """Number of nodes."""
        return len(self._indptr) - 1

    @property
    def num_edges(self) -> int:
        """Number of edges: each undirected edge once."""
        return len(self._indices) // (1 if self._directed else 2)

    @property
    def device(self) -> torch.device:
        return self._indices.device

    def degree(self) -> torch.Tensor:
        """(N,) int64 neighbours of each node (out-neighbours when directed)."""
        return torch.diff(self._indptr)

    def __repr__(self) -> str:
        kind = "directed" if self._directed else "undirected"
        return f"Graph(n={self.n}, edges={self.num_edges}, {kind}, device={self.device})"

    # ---- converters ----------------------------------------------------------------------

    def to(self, device: str | torch.device) -> Graph:
        """A copy of this graph on ``device``."""
        return Graph(
            self._indptr.to(device),
            self._indices.to(device),
            self._weights.to(device),
            directed=self._directed,
            names=self._names,
            validate=False,
        )

    def to_undirected(self) -> Graph:
        """The undirected graph A + A^T of a directed one (a pair linked both ways gets the
        sum of its two weights); an undirected graph itself."""
        if not self._directed:
            return self
        rows = rows_of(self._indptr)
        g = Graph.from_edges(rows, self._indices, self._weights, n=self.n)
        return Graph(g.indptr, g.indices, g.weights, names=self._names, validate=False)

    def to_scipy(self) -> scipy.sparse.csr_array:
        """The adjacency as a ``scipy.sparse.csr_array`` (on the host)."""
        import scipy.sparse

        return scipy.sparse.csr_array(
            (self._weights.cpu().numpy(), self._indices.cpu().numpy(), self._indptr.cpu().numpy()),
            shape=(self.n, self.n),
        )

    def to_networkx(self, weight: str = "weight") -> nx.Graph:
        """A networkx Graph (DiGraph when directed) with the edge attribute ``weight``, its
        nodes named by :attr:`names` (or 0..n-1)."""
        import networkx as nx

        g = nx.DiGraph() if self._directed else nx.Graph()
        names = self._names if self._names is not None else range(self.n)
        g.add_nodes_from(names)
        coo = self.to_scipy().tocoo()
        keep = np.ones(len(coo.row), bool) if self._directed else coo.row < coo.col
        label = list(names)
        g.add_edges_from(
            (label[i], label[j], {weight: float(w)})
            for i, j, w in zip(coo.row[keep], coo.col[keep], coo.data[keep], strict=True)
        )
        return g

    def to_cugraph(self) -> Any:
        """The graph as a ``cugraph.Graph`` built on the GPU (edges once each when undirected,
        weights in column "weight"); the graph must be on a CUDA device."""
        cudf, cugraph = rapids()
        if not self._indices.is_cuda:
            raise ValueError(
                f"to_cugraph needs a graph on a CUDA device, this one is on {self.device}; call .to('cuda') first"
            )
        rows = rows_of(self._indptr)
        keep = torch.ones_like(rows, dtype=torch.bool) if self._directed else rows < self._indices
        frame = cudf.DataFrame(
            {
                name: _kernels._arg(t[keep].contiguous())
                for name, t in (("src", rows), ("dst", self._indices), ("weight", self._weights))
            }
        )
        g = cugraph.Graph(directed=self._directed)
        g.from_cudf_edgelist(frame, source="src", destination="dst", edge_attr="weight", renumber=False)
        return g


# ---- CSR helpers -------------------------------------------------------------------------


def rapids():
    """(cudf, cugraph), or a GpuGraphError that says how to install them."""
    try:
        import cudf
        import cugraph
    except ImportError as exc:
        raise GpuGraphError(
            "to_cugraph needs RAPIDS cuGraph and cuDF, which are not installed; "
            "pip install cugraph-cu12 cudf-cu12 (see docs.rapids.ai/install), or use to_scipy / to_networkx"
        ) from exc
    return cudf, cugraph


def rows_of(indptr: torch.Tensor) -> torch.Tensor:
    return torch.arange(len(indptr) - 1, device=indptr.device).repeat_interleave(torch.diff(indptr))


def coalesce(rows, cols, w, n: int):
    """CSR (indptr, indices, weights) of the COO entries, columns sorted in each row and
    duplicate entries summed."""
    key = rows * max(n, 1) + cols
    key, order = torch.sort(key)
    unique, inverse = torch.unique_consecutive(key, return_inverse=True)
    weights = torch.zeros(len(unique), dtype=w.dtype, device=w.device).index_add_(0, inverse, w[order])
    rows, cols = unique // max(n, 1), unique % max(n, 1)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return indptr, cols, weights


def _check_symmetric(indptr, indices, weights, hint: str) -> None:
    n = len(indptr) - 1
    rows = rows_of(indptr)
    key = indices * max(n, 1) + rows  # the transpose's entries, in its own order
    order = torch.argsort(key)
    same = len(key) == len(indices) and torch.equal(key[order], rows * max(n, 1) + indices)
    if same and torch.equal(weights[order], weights):
        return
    if same:
        bad = int(torch.nonzero(weights[order] != weights)[0])
        i, j = int(rows[bad]), int(indices[bad])
        raise ValueError(
            f"the matrix is not symmetric: A[{i}, {j}] = {float(weights[bad]):.6g} but A[{j}, {i}] = "
            f"{float(weights[order][bad]):.6g}; an undirected graph has one weight an edge: {hint}"
        )
    transposed = set(zip(indices.tolist(), rows.tolist(), strict=True))
    i, j = next((i, j) for i, j in zip(rows.tolist(), indices.tolist(), strict=True) if (i, j) not in transposed)
    raise ValueError(
        f"the matrix is not symmetric: it has an entry at [{i}, {j}] but none at [{j}, {i}]; "
        f"an undirected graph holds every edge both ways: {hint}"
    )


def _checked_csr(indptr, indices, weights, directed: bool):
    if indptr.dim() != 1 or len(indptr) < 1 or indptr.dtype.is_floating_point or indptr.dtype == torch.bool:
        raise ValueError(
            f"indptr must be a 1-D integer array of N + 1 offsets, got {indptr.dtype} of shape {tuple(indptr.shape)}"
        )
    indices = _node_ids(indices, "indices")
    indptr = indptr.to(device=indices.device, dtype=torch.int64)
    n, e = len(indptr) - 1, len(indices)
    if int(indptr[0]) != 0 or int(indptr[-1]) != e or bool((torch.diff(indptr) < 0).any()):
        raise ValueError(
            f"indptr must rise from 0 to len(indices) = {e}; got {int(indptr[0])} .. "
            f"{int(indptr[-1])}{' and a decrease' if bool((torch.diff(indptr) < 0).any()) else ''}"
        )
    if e and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"indices must lie in [0, N) = [0, {n}); got {int(indices.min())} .. {int(indices.max())}")
    w = _edge_weights(weights, e, indices.device)
    rows = rows_of(indptr)
    _refuse_loops(rows, indices)
    indptr, indices, w = coalesce(rows, indices, w, n)
    if not directed:
        _check_symmetric(
            indptr,
            indices,
            w,
            "build it with Graph.from_edges(src, dst, weights), each edge once, or pass directed=True",
        )
    return indptr, indices, w


def _node_ids(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one entry an edge), got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer node ids, got dtype {t.dtype}")
    return t.to(torch.int64)


def _edge_weights(weights, e: int, device) -> torch.Tensor:
    if weights is None:
        return torch.ones(e, dtype=torch.float64, device=device)
    w = as_tensor(weights, "weights").to(device)
    if w.shape != (e,):
        raise ValueError(f"weights must have one entry an edge ({e}), got shape {tuple(w.shape)}")
    if not w.dtype.is_floating_point:
        w = w.to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weights contain NaN or Inf")
    return w


def _refuse_loops(src, dst) -> None:
    loops = torch.nonzero(src == dst).flatten()
    if len(loops):
        nodes = sorted({int(src[i]) for i in loops[:5]})
        raise ValueError(
            f"the graph has {len(loops)} self-loop(s) (at nodes {', '.join(map(str, nodes))}); no measure "
            "here defines them: remove them first (SciPy: a.setdiag(0); a.eliminate_zeros())"
        )


def _count_nodes(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


__all__ = ["Graph"]
