"""KnnGraph: a directed k-nearest-neighbour graph, its undirected views and converters.

A graph is a value: its arrays cannot be reassigned, and whatever it derives from them
(reciprocity) is keyed by the arrays' version counters and a hash of their bits, so an
in-place edit of ``indices`` or ``weights``, through torch or through a NumPy view,
recomputes the derivation instead of serving a stale one. Measures reach
the edges through the public methods :meth:`KnnGraph.reciprocity`,
:meth:`KnnGraph.symmetric_weights` and :meth:`KnnGraph.edges`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gpugraph._util.convert import as_tensor
from gpugraph._util.types import ArrayLike, Device, PathLike
from gpugraph._util.version import __version__
from gpugraph.graph.graph import Graph, coalesce, rapids
from gpugraph.kernels import cuda as _kernels

if TYPE_CHECKING:
    import networkx as nx
    import scipy.sparse


MODES = ("mean", "max", "mutual")
_FORMAT = "gpugraph.KnnGraph/1"


class KnnGraph:
    """A directed k-nearest-neighbour graph: node i points to ``indices[i]``.

    Parameters
    ----------
    indices : (N, k) integer tensor or array, N >= 1, k >= 1
        Neighbours of each node; no self loops, no repeated neighbour within a row. -1 is an
        empty slot: a node with fewer than k neighbours, as faiss and cuVS pad their
        results; its weight is ignored (stored as 0), and every measure, view and converter
        skips it.
    weights : (N, k) floating-point tensor or array
        Edge weights aligned with ``indices`` (cosine similarities for ``knn_graph``).

    Undirected views come from :meth:`adjacency` and its converters, in three modes:
    ``"mean"`` A = (W + W^T) / 2 (the graph of Lu et al. 2022: a mutual pair keeps its
    weight, a one-way edge gets half), ``"max"`` the union with A_ij = max(W_ij, W_ji) over
    the directions present, ``"mutual"`` only reciprocal pairs, with the mean of their two
    directed weights.

    The graph is immutable: ``indices`` and ``weights`` cannot be reassigned (build a new
    graph instead), and derived data is recomputed if either array is edited in place.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g = gg.KnnGraph(torch.tensor([[1, 2], [0, 2], [0, -1]]),      # node 2 lists one neighbour
    ...                 torch.tensor([[0.9, 0.5], [0.9, 0.4], [0.5, 0.0]]))
    >>> g.n, g.k
    (3, 2)
    >>> g.adjacency("mean").to_dense()     # float64: the mean of two float32 weights is exact
    tensor([[0.0000, 0.9000, 0.5000],
            [0.9000, 0.0000, 0.2000],
            [0.5000, 0.2000, 0.0000]], dtype=torch.float64)
    >>> gg.triangles(g)
    1
    """

    __slots__ = ("_cache", "_indices", "_meta", "_weights")
    _indices: torch.Tensor
    _weights: torch.Tensor
    _cache: dict
    _meta: dict

    def __init__(self, indices: ArrayLike, weights: ArrayLike, *, validate: bool = True, meta: dict | None = None):
        indices = as_tensor(indices, "indices")
        weights = as_tensor(weights, "weights")
        if validate:  # a graph built by a user owns copies: no outside alias can edit it
            indices, weights = _check_lists(indices, weights)
            indices, weights = indices.clone(), weights.clone()
        object.__setattr__(self, "_indices", indices)
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "_meta", dict(meta or {}))

    def __setattr__(self, name, value):
        raise AttributeError(
            f"KnnGraph is immutable: cannot set {name!r}; build a new graph with KnnGraph(indices, weights) instead"
        )

    @property
    def indices(self) -> torch.Tensor:
        """(N, k) int64 neighbours, by decreasing weight for graphs from ``knn_graph``."""
        return self._indices

    @property
    def weights(self) -> torch.Tensor:
        """(N, k) edge weights aligned with ``indices``."""
        return self._weights

    @property
    def meta(self) -> dict:
        """How the graph was built (metric, n, d, k, dtype, precision for ``knn_graph``);
        a copy, saved with the graph."""
        return dict(self._meta)

    @property
    def n(self) -> int:
        """Number of nodes."""
        return self._indices.shape[0]

    @property
    def k(self) -> int:
        """Length of every node's list (its out-degree, less its empty slots)."""
        return self._indices.shape[1]

    @property
    def device(self) -> torch.device:
        return self._indices.device

    def __repr__(self) -> str:
        return f"KnnGraph(n={self.n}, k={self.k}, device={self.device})"

    def _cached(self, key, compute):
        """``compute()``, kept while neither array has changed since: an edit through torch
        bumps a version counter, and one through a NumPy view, ``.data`` or DLPack, which
        torch does not count, changes the arrays' fingerprint (a hash of their bits)."""
        version = (self._indices._version, self._weights._version, self._fingerprint())
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            hit = (version, compute())
            self._cache[key] = hit
        return hit[1]

    def _fingerprint(self) -> int:
        if self.device.type == "cpu":
            from gpugraph.kernels import graph_cpu as _graph_cpu

            return _graph_cpu.fingerprint(self._indices.contiguous().numpy(), self._weights.contiguous().numpy())
        return _fingerprint_torch(self._indices, self._weights)

    def reciprocity(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every directed edge i -> indices[i, a]: whether the reverse edge exists, and
        its weight (0 where it does not). Two (N, k) tensors, bool and ``weights.dtype``;
        computed once and kept with the graph."""
        return self._cached("reciprocity", self._compute_reciprocity)

    def _compute_reciprocity(self) -> tuple[torch.Tensor, torch.Tensor]:
        indices, weights = self._indices, self._weights
        if indices.is_cuda and weights.dtype in (torch.float32, torch.float64):
            return _kernels.edge_partners(indices.contiguous(), weights.contiguous())
        return reciprocity_of(indices, weights)

    def symmetric_weights(
        self, mode: str = "mean", weighted: bool = True, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The symmetric adjacency A as two (N, k) tensors aligned with ``indices``.

        ``fwd[i, a]`` is A[i, j] for j = indices[i, a], carried by that directed edge;
        ``rev[i, a]`` is A[j, i] for a one-way edge (0 otherwise), since no edge of j
        carries it. Every nonzero A[i, j] appears exactly once in the two arrays, so
        ``fwd.sum() + rev.sum()`` is sum_ij A_ij.
        """
        check_mode(mode)
        fwd, rev = symmetric_from(self._weights, *self.reciprocity(), mode, weighted, dtype)
        if not weighted:  # empty slots hold weight 0, but unweighted every slot counted 1
            present = self._indices >= 0
            fwd, rev = fwd * present, rev * present
        return fwd, rev

    def edges(
        self, mode: str = "mean", weighted: bool = True, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The symmetric adjacency as COO triples (rows, cols, values), both directions of
        every undirected edge, each ordered pair once, unsorted."""
        fwd, rev = self.symmetric_weights(mode, weighted, dtype)
        recip, _ = self.reciprocity()
        n, k = self._indices.shape
        src = torch.arange(n, device=self.device).repeat_interleave(k)  # (N k,)
        dst = self._indices.flatten()
        recip = recip.flatten()
        mutual = mode == "mutual"
        present = dst >= 0
        keep = recip if mutual else present  # directed edges carrying A[i, j]
        one_way = torch.zeros_like(recip) if mutual else ~recip & present  # edges also carrying A[j, i]
        rows = torch.cat([src[keep], dst[one_way]])
        cols = torch.cat([dst[keep], src[one_way]])
        return rows, cols, torch.cat([fwd.flatten()[keep], rev.flatten()[one_way]])

    def _csr_parts(self, mode: str, weighted: bool):
        # float64: the mean of two float32 weights is exact there, so converters agree with
        # the measures (which sum in float64) to the last digit
        rows, cols, vals = self.edges(mode, weighted, dtype=torch.float64)
        order = torch.argsort(rows * self.n + cols)
        crow = torch.zeros(self.n + 1, dtype=torch.int64, device=self.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=self.n), 0)
        return crow, cols[order], vals[order]

    def adjacency(self, mode: str = "mean", weighted: bool = True) -> torch.Tensor:
        """Symmetric (N, N) adjacency as a torch sparse CSR tensor, without self loops.

        Columns are sorted within each row; values are float64 (a mean of two float32
        weights is exact there). ``weighted=False`` gives 1 for every edge.
        """
        crow, col, val = self._csr_parts(mode, weighted)
        with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, col, val, size=(self.n, self.n), check_invariants=False)

    def to_scipy(self, mode: str = "mean", weighted: bool = True) -> scipy.sparse.csr_array:
        """The adjacency as a float64 ``scipy.sparse.csr_array`` (on the host)."""
        import scipy.sparse

        crow, col, val = (t.cpu().numpy() for t in self._csr_parts(mode, weighted))
        return scipy.sparse.csr_array((val, col, crow), shape=(self.n, self.n))

    def to_networkx(self, mode: str = "mean", weighted: bool = True) -> nx.Graph:
        """The adjacency as an undirected ``networkx.Graph`` with edge attribute ``weight``."""
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(self.n))
        coo = self.to_scipy(mode, weighted).tocoo()
        upper = coo.row < coo.col
        g.add_weighted_edges_from(
            zip(coo.row[upper].tolist(), coo.col[upper].tolist(), coo.data[upper].tolist(), strict=True)
        )
        return g

    def to_cugraph(self, mode: str = "mean", weighted: bool = True) -> Any:
        """The adjacency as an undirected ``cugraph.Graph`` (RAPIDS), built on the GPU.

        Each undirected edge is passed once (row < column) with its weight in column
        "weight"; the graph must be on a CUDA device.
        """
        cudf, cugraph = rapids()
        if not self._indices.is_cuda:
            raise ValueError(
                f"to_cugraph needs a graph on a CUDA device, this one is on {self.device}; call .to('cuda') first"
            )
        rows, cols, vals = self.edges(mode, weighted, dtype=self._weights.dtype)
        upper = rows < cols
        frame = cudf.DataFrame(
            {name: _kernels._arg(t[upper]) for name, t in (("src", rows), ("dst", cols), ("weight", vals))}
        )
        g = cugraph.Graph(directed=False)
        g.from_cudf_edgelist(frame, source="src", destination="dst", edge_attr="weight", renumber=False)
        return g

    def to_graph(self, mode: str = "mean", weighted: bool = True) -> Graph:
        """This graph as a :class:`~gpugraph.Graph`: the undirected graph of ``mode``
        ("mean", "max" or "mutual", with float64 weights as :meth:`adjacency` gives them),
        or with ``mode="directed"`` the directed graph of the lists themselves (edge i -> j
        for each j that i lists: Leicht and Newman's directed modularity reads it).
        ``weighted=False``: weight 1 on every edge."""
        if mode == "directed":
            present = self._indices >= 0
            rows = torch.arange(self.n, device=self.device)[:, None].expand(-1, self.k)
            w = self._weights.to(torch.float64) if weighted else present.to(torch.float64)
            indptr, indices, weights = coalesce(rows[present], self._indices[present], w[present], self.n)
            return Graph(indptr, indices, weights, directed=True, validate=False)
        indptr, indices, weights = self._csr_parts(mode, weighted)
        return Graph(indptr, indices, weights, validate=False)

    def to(self, device: str | torch.device) -> KnnGraph:
        """A copy of this graph on ``device``."""
        return KnnGraph(self._indices.to(device), self._weights.to(device), validate=False, meta=self._meta)

    def save(self, path: PathLike) -> Path:
        """Write the graph to ``path`` (a NumPy .npz: indices, weights and :attr:`meta`), so
        that a graph built once at large N is not built again. Returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {**self._meta, "gpugraph": __version__, "format": _FORMAT}
        np.savez(
            path,
            indices=self._indices.cpu().numpy(),
            weights=self._weights.cpu().numpy(),
            meta=np.array(json.dumps(meta)),
        )
        return path

    @classmethod
    def load(cls, path: PathLike, device: Device = None) -> KnnGraph:
        """A graph written by :meth:`save`, on ``device`` (default: the CPU), checked as a
        user-built graph is (shapes, range, no self loops or repeats)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"graph file {str(path)!r} does not exist")
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with f:
                indices, weights, meta = f["indices"], f["weights"], json.loads(str(f["meta"]))
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path} is not a graph written by KnnGraph.save ({exc})") from exc
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} holds graph format {meta.get('format')!r}; this gpugraph reads {_FORMAT!r}")
        g = cls(indices, weights, meta={k: v for k, v in meta.items() if k != "format"})
        return g if device is None else g.to(device)


def _fingerprint_torch(*tensors: torch.Tensor) -> int:
    """A hash of the tensors' bits on their device (int64 arithmetic wraps): sum over the
    words of a multiply-xorshift mix of (word, position); any edit changes it except with
    probability about 2^-64."""
    total = torch.zeros((), dtype=torch.int64, device=tensors[0].device)
    for m, t in enumerate(tensors):
        bits = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}[t.element_size()]
        words = t.contiguous().view(-1).view(bits).to(torch.int64)
        z = words ^ (torch.arange(len(words), device=words.device) * -7046029254386353131 + m)
        for shift, mult in ((30, -4658895280553007687), (27, -7723592293110705685)):
            z = (z ^ ((z >> shift) & ((1 << (64 - shift)) - 1))) * mult  # a logical shift
        total += (z ^ ((z >> 31) & ((1 << 33) - 1))).sum()
    return int(total)


def reciprocity_of(
    indices: torch.Tensor, weights: torch.Tensor, rows: slice | None = None, compiled: bool | None = None
):
    """For the directed edges of ``rows`` (default: all) of the lists ``indices`` (N, k):
    whether each is reciprocated, and the reverse edge's weight (0 where absent, and at an
    empty slot). Two (rows, k) tensors, bool and ``weights.dtype``; O(rows k^2), compiled on
    the CPU (gpugraph/kernels/graph_cpu.py), chunked torch elsewhere (or with compiled=False)."""
    rows = rows or slice(0, len(indices))
    if compiled if compiled is not None else indices.device.type == "cpu":
        from gpugraph.kernels import graph_cpu as _graph_cpu

        pairs = _graph_cpu.partners(indices.contiguous().numpy(), weights.contiguous().numpy(), rows.start, rows.stop)
        return torch.from_numpy(pairs[0]), torch.from_numpy(pairs[1])
    mine = indices[rows]
    n, k = mine.shape
    recip = torch.empty((n, k), dtype=torch.bool, device=indices.device)
    partner_w = torch.zeros((n, k), dtype=weights.dtype, device=indices.device)
    step = max(1, (1 << 22) // (k * k))
    for r0 in range(0, n, step):
        idx = mine[r0 : r0 + step]  # (c, k)
        own = torch.arange(rows.start + r0, rows.start + r0 + len(idx), device=indices.device)  # (c,)
        present = (idx >= 0)[:, :, None]  # an empty slot (-1) has no reverse edge
        match = (indices[idx.clamp(min=0)] == own[:, None, None]) & present  # (c, k, k): j's list holds i
        recip[r0 : r0 + step] = match.any(dim=2)
        partner_w[r0 : r0 + step] = (weights[idx.clamp(min=0)] * match).sum(dim=2)
    return recip, partner_w


def symmetric_from(weights, recip, partner_w, mode: str, weighted: bool, dtype):
    """(fwd, rev) of :meth:`KnnGraph.symmetric_weights` from the directed weights and their
    reciprocity: the one statement of the three modes."""
    w = weights.to(dtype) if weighted else torch.ones(weights.shape, dtype=dtype, device=weights.device)
    pw = partner_w.to(dtype) if weighted else w
    zero = torch.zeros((), dtype=dtype, device=weights.device)
    if mode == "mutual":
        return torch.where(recip, (w + pw) / 2, zero), torch.zeros_like(w)
    if mode == "mean" and weighted:
        return torch.where(recip, (w + pw) / 2, w / 2), torch.where(recip, zero, w / 2)
    # "max", and unweighted "mean" (every edge of the union counts 1)
    return torch.where(recip, torch.maximum(w, pw), w), torch.where(recip, zero, w)


def check_graph(g, name: str = "g") -> KnnGraph:
    if not isinstance(g, KnnGraph):
        raise TypeError(f"{name} must be a KnnGraph (from gpugraph.knn_graph), got {type(g).__name__}")
    return g


def check_mode(mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_lists(indices: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if indices.dim() != 2:
        raise ValueError(f"indices must be 2-D (N, k), got shape {tuple(indices.shape)}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
    n, k = indices.shape
    if n == 0 or k == 0:
        raise ValueError(
            f"a KnnGraph needs at least one node and one neighbour per node, got indices of "
            f"shape {tuple(indices.shape)}"
        )
    if weights.shape != indices.shape:
        raise ValueError(f"weights must have the shape of indices {tuple(indices.shape)}, got {tuple(weights.shape)}")
    if not weights.dtype.is_floating_point:
        raise TypeError(f"weights must be floating point, got dtype {weights.dtype}")
    if weights.device != indices.device:
        raise ValueError(f"indices are on {indices.device} but weights on {weights.device}")
    indices = indices.to(torch.int64)
    outside, self_loop, repeat = _list_faults(indices)
    if outside >= 0:
        raise ValueError(
            f"indices must lie in [0, N) = [0, {n}) or be -1 (an empty slot), got values outside (node {outside})"
        )
    if self_loop >= 0:
        raise ValueError(f"node {self_loop} lists itself as a neighbour; self loops are not allowed")
    if repeat >= 0:
        raise ValueError(f"node {repeat} lists the same neighbour twice; each must appear once")
    empty = indices < 0
    if bool(empty.any()):  # an empty slot's weight means nothing (faiss pads with -inf or 0)
        weights = weights.masked_fill(empty, 0.0)
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights contain NaN or Inf")
    return indices, weights


def _list_faults(indices: torch.Tensor, compiled: bool | None = None) -> tuple[int, int, int]:
    """The first node whose list leaves [0, N) (other than -1, an empty slot), lists itself,
    or repeats a neighbour (-1: none):
    one compiled pass on the CPU, three torch passes elsewhere."""
    if compiled if compiled is not None else indices.device.type == "cpu":
        from gpugraph.kernels import graph_cpu as _graph_cpu

        low, high, loops = (int(v) for v in _graph_cpu.list_faults(indices.contiguous().numpy()))
        return low, high, loops
    n = len(indices)

    def first(bad_rows: torch.Tensor) -> int:
        return int(bad_rows.nonzero()[0]) if bool(bad_rows.any()) else -1

    srt = indices.sort(dim=1).values
    return (
        first(((indices < -1) | (indices >= n)).any(dim=1)),
        first((indices == torch.arange(n, device=indices.device)[:, None]).any(dim=1)),
        first(((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any(dim=1)),
    )
