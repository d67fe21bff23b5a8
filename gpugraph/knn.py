"""Exact cosine k-nearest-neighbour graphs, built in tiles.

The similarity matrix S = X X^T of the unit rows is symmetric, so the tiles of its upper
triangle are computed once each and every off-diagonal tile feeds the running top-k of both
its row block and its column block: half the GEMM work of a plain blocked search. Selection
keeps a running threshold per row (the current k-th best similarity); after a row block's
diagonal tile has been seen, only the few tile entries at or above that threshold are
gathered and merged, so selection costs a comparison pass per tile, not a sort.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import torch

from gpugraph import _kernels
from gpugraph._errors import GpuGraphError
from gpugraph._tensor import as_features, as_tensor, unit_rows

_MODES = ("mean", "max", "mutual")


_PRECISIONS = ("exact", "bf16", "tf32")


def knn_graph(
    x, k: int = 10, *, precision: str = "exact", tile: int | None = None, device=None
) -> KnnGraph:
    """Exact cosine k-nearest-neighbour graph over the rows of ``x``.

    Row i of the result lists the k rows most similar to row i by cosine similarity
    cos(x_i, x_j) = x_i . x_j / (|x_i| |x_j|), in decreasing order of similarity, never i
    itself. Exact duplicates of row i are other nodes and are listed with weight 1. Ties are
    broken towards the lower index, so the result is deterministic.

    Parameters
    ----------
    x : (N, D) floating-point torch tensor, NumPy array or CuPy array
        One sample per row. float16/bfloat16/float32 are computed in float32, float64 in float64.
    k : int
        Neighbours per node, 1 <= k < N.
    precision : {"exact", "bf16", "tf32"}
        Arithmetic of the similarity tiles. Every choice returns the exact neighbours and
        exact weights: "exact" computes the tiles in the compute dtype (on CUDA with TF32
        switched off, whatever torch's global setting); "bf16" (and "tf32", CUDA only)
        computes them in low precision only to screen candidates, keeping every entry
        within a proven rounding bound of the running threshold, and re-scores the kept
        pairs in the compute dtype. Screening pays where low-precision GEMM is much faster
        (GPU tensor cores); on the CPU "exact" is usually faster.
    tile : int, optional
        Rows per tile. By default chosen from available memory (at most 4096 on the CPU,
        8192 on CUDA).
    device : torch.device or str, optional
        Where to compute; the result lives there. Default: x's device. A host ``x`` with
        ``device="cuda"`` is copied to the GPU when it fits in half the free GPU memory,
        and otherwise streamed to it tile by tile from pinned host memory.

    Returns
    -------
    KnnGraph
        ``indices`` (N, k) int64 and ``weights`` (N, k) float32 on the compute device.

    Raises
    ------
    TypeError
        If x is not a floating-point array, or k is not an integer.
    ValueError
        If x is not 2-D, holds NaN or Inf, has zero-norm rows, k is out of range, or the
        precision or device is unknown, or the precision unavailable on the device.
    GpuGraphError
        If a CUDA device is asked for but torch sees none, or CuPy (the kernels) is missing.

    Notes
    -----
    Time O(N^2 D / 2) for the GEMM plus O(N^2) comparisons; memory O(N k + tile^2): the
    N x N matrix is never held. On CUDA (float32, k <= 256) a CuPy kernel selects from
    each tile in one streaming pass (kernels/topk.cu); elsewhere torch code does.

    Screening bounds, for unit vectors of dimension D, on |s_low - s|: bf16 rounds both
    inputs (unit roundoff u = 2^-8, moving each product by at most (2u + u^2)|a_i b_i|,
    and sum |a_i b_i| <= 1), accumulates in float32 (at most D 2^-24) and rounds the
    result (u): e = 3.01 u + D 2^-23. TF32 keeps 10 mantissa bits (u = 2^-10 even if the
    hardware truncates) with float32 accumulation and output: e = 2.01 u + D 2^-23. An
    entry is kept if s_low >= (row's current k-th exact similarity) - e, which holds for
    every entry that can enter the top k. On the CPU a bf16 tile that would keep more
    than 64 candidates per row is recomputed exactly; on CUDA, diagonal tiles are exact.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> gg.knn_graph(x, k=1).indices.flatten().tolist()
    [1, 0, 3, 2]
    """
    t = as_features(x)
    n = t.shape[0]
    _check_k(k, n)
    target = _compute_device(device, t.device)
    _check_precision(precision, target)
    rows = _RowBlocks.place(unit_rows(t), target)
    tile = tile or _default_tile(target, rows.dtype, k)
    if target.type == "cuda" and rows.dtype == torch.float32 and k <= _kernels.MAX_K:
        indices, weights = _knn_cuda(rows, k, tile, precision)
    else:
        with _tf32(False):
            indices, weights = _knn_tiled(rows, k, tile, torch.bfloat16 if precision == "bf16" else None)
    return KnnGraph(indices, weights.to(torch.float32), validate=False)


def _check_k(k, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k < n:
        raise ValueError(
            f"k must satisfy 1 <= k < N (a node has N - 1 others), got k={k} with N={n}"
        )


def _compute_device(device, default: torch.device) -> torch.device:
    if device is None:
        return default
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device or a string like 'cuda:0', got {device!r}") from exc
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise GpuGraphError(f"device={device!r} was asked for, but torch sees no CUDA device")
        if target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
    elif target.type != "cpu":
        raise ValueError(f"device must be a CPU or CUDA device, got {device!r}")
    return target


def _check_precision(precision, device: torch.device) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(
            "precision='tf32' needs a CUDA device (TF32 is a GPU tensor-core format); "
            "on the CPU use 'bf16' or 'exact'"
        )


def _default_tile(device: torch.device, dtype: torch.dtype, k: int) -> int:
    """Rows per tile: a float tile plus its mask (and a transposed copy) within a memory
    budget, GEMM-friendly."""
    size = torch.tensor([], dtype=dtype).element_size()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, cap = free // 8, 8192
    else:
        budget, cap = _available_host_memory() // 8, 4096
    side = int(math.sqrt(budget / (size + 1)))
    return max(2 * (k + 1), min(cap, side))


def _available_host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


class _RowBlocks:
    """Unit rows handed out by block on the compute device.

    Resident: slices of a tensor already there. Streamed: copies from (pinned) host memory,
    for an X larger than the GPU; the two most recent blocks are kept, which is all the
    tile loops reuse (the outer block across its inner loop).
    """

    def __init__(self, xn: torch.Tensor, device: torch.device, streamed: bool):
        self.xn, self.device, self.streamed = xn, device, streamed
        self._recent: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def place(cls, xn: torch.Tensor, device: torch.device) -> _RowBlocks:
        if xn.device == device:
            return cls(xn, device, streamed=False)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if xn.numel() * xn.element_size() > free // 2:
                return cls(xn.pin_memory(), device, streamed=True)
        return cls(xn.to(device), device, streamed=False)

    @property
    def n(self) -> int:
        return self.xn.shape[0]

    @property
    def d(self) -> int:
        return self.xn.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.xn.dtype

    def get(self, a0: int, a1: int) -> torch.Tensor:
        if not self.streamed:
            return self.xn[a0:a1]
        key = (a0, a1)
        if key not in self._recent:
            if len(self._recent) == 2:
                self._recent.pop(next(iter(self._recent)))
            self._recent[key] = self.xn[a0:a1].to(self.device, non_blocking=True)
        return self._recent[key]


def _blocks(n: int, tile: int, k: int) -> list[tuple[int, int]]:
    """Split 0..n into balanced blocks of at least k + 1 rows (so a diagonal tile fills a row)."""
    tile = max(tile, 2 * (k + 1))
    count = max(1, math.ceil(n / tile))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _screen_error(precision: str, d: int) -> float:
    """Bound on |s_low - s| for a dot product of unit vectors of dimension d (see knn_graph)."""
    if precision == "bf16":
        return 3.01 * 2.0**-8 + d * 2.0**-23
    if precision == "tf32":
        return 2.01 * 2.0**-10 + d * 2.0**-23
    return 0.0


def _knn_cuda(rows: _RowBlocks, k: int, tile: int, precision: str,
              transpose_copy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the upper-triangular tiles of X X^T: GEMM by torch, selection by topk.cu.

    Diagonal tiles are computed exactly first; off-diagonal tiles in ``precision``, each
    offered to its row block and, transposed, to its column block: through a contiguous
    copy (coalesced reads, one more pass over the tile), or with ``transpose_copy=False``
    read in place with strides (benchmarks/bench_gpu.py times both). Screened candidates
    are re-scored inside the kernel from the unit rows of the two blocks.
    """
    n, device = rows.n, rows.device
    err = _screen_error(precision, rows.d)
    best_v = torch.full((n, k), -math.inf, dtype=torch.float32, device=device)  # (N, k)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=device)  # (N, k)
    blocks = _blocks(n, tile, k)
    for a0, a1 in blocks:
        xa = rows.get(a0, a1)
        _kernels.topk_merge(_gemm(xa, xa, "exact"), a0, a0, best_v, best_i)
    for bi, (a0, a1) in enumerate(blocks):
        xa = rows.get(a0, a1)
        for b0, b1 in blocks[bi + 1 :]:
            xb = rows.get(b0, b1)
            s = _gemm(xa, xb, precision)  # (ta, tb)
            _kernels.topk_merge(s, a0, b0, best_v, best_i, margin=err, xr=xa, xc=xb)
            if transpose_copy:
                _kernels.topk_merge(s.T.contiguous(), b0, a0, best_v, best_i, margin=err, xr=xb, xc=xa)
            else:
                _kernels.topk_merge(s, b0, a0, best_v, best_i, transpose=True, margin=err, xr=xb, xc=xa)
    return best_i, best_v.clamp_(-1.0, 1.0)


def _gemm(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """a @ b.T as float32, in the arithmetic ``precision`` names (TF32 off unless asked)."""
    if precision == "bf16":
        return (a.to(torch.bfloat16) @ b.to(torch.bfloat16).T).float()
    with _tf32(precision == "tf32"):
        return a @ b.T


@contextlib.contextmanager
def _tf32(enabled: bool):
    """Set whether CUDA float32 matmuls may use TF32, restoring torch's setting after."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32 = saved


def _knn_tiled(
    rows: _RowBlocks, k: int, tile: int, low: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the upper-triangular tiles of X X^T; device-agnostic torch code.

    With ``low`` (torch.bfloat16) tiles are computed in that precision only to screen
    candidates: an entry is kept if it is within the rounding bound of the running
    threshold, and every kept pair is re-scored in the precision of X. The neighbours
    and weights are those of the exact search; a tile whose screen keeps too many
    candidates (tightly clustered data) is recomputed exactly instead.
    """
    n, device, dtype = rows.n, rows.device, rows.dtype
    err = _screen_error("bf16" if low is not None else "exact", rows.d)

    def screened(a, b):
        return a.to(low) @ b.to(low).T if low is not None else a @ b.T

    best_v = torch.full((n, k), -math.inf, dtype=dtype, device=device)  # (N, k)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=device)  # (N, k)
    blocks = _blocks(n, tile, k)
    # Diagonal tiles first: afterwards every row holds k exact candidates and a threshold.
    for a0, a1 in blocks:
        xa = rows.get(a0, a1)
        s = screened(xa, xa)  # (ta, ta)
        s.fill_diagonal_(-math.inf)
        cut = torch.topk(s, k, dim=1, sorted=False).values.amin(dim=1)  # (ta,)
        # A true top-k entry of the tile is at most 2 err below the k-th screened value.
        mask = s >= (cut - 2 * err)[:, None]  # (ta, ta), about k per row
        exact = low is None
        if not exact and _too_many(mask):
            s, exact = xa @ xa.T, True
            s.fill_diagonal_(-math.inf)
            mask = s >= torch.topk(s, k, dim=1, sorted=False).values.amin(dim=1)[:, None]
        _offer(best_v, best_i, xa, xa, a0, a0, s, mask, transpose=False, exact=exact)
    for bi, (a0, a1) in enumerate(blocks):
        xa = rows.get(a0, a1)
        for b0, b1 in blocks[bi + 1 :]:
            xb = rows.get(b0, b1)
            s = screened(xa, xb)  # (ta, tb): rows a0..a1 against columns b0..b1
            row_mask = s >= (best_v[a0:a1, k - 1] - err)[:, None]  # candidates for rows of a
            col_mask = s >= (best_v[b0:b1, k - 1] - err)[None, :]  # candidates for rows of b
            exact = low is None
            if not exact and (_too_many(row_mask) or _too_many(col_mask)):
                s, exact = xa @ xb.T, True
                row_mask = s >= best_v[a0:a1, k - 1, None]
                col_mask = s >= best_v[None, b0:b1, k - 1]
            _offer(best_v, best_i, xa, xb, a0, b0, s, row_mask, transpose=False, exact=exact)
            _offer(best_v, best_i, xa, xb, b0, a0, s, col_mask, transpose=True, exact=exact)
    return best_i, best_v.clamp_(-1.0, 1.0)


def _too_many(mask: torch.Tensor) -> bool:
    """Whether a screen kept more than 64 candidates per row on average."""
    return int(mask.sum()) > 64 * max(mask.shape)


def _offer(best_v, best_i, xa, xb, r0, c0, s, mask, *, transpose: bool, exact: bool) -> None:
    """Merge the masked entries of tile ``s`` = xa xb^T into the running top-k of their rows.

    Without ``transpose``, masked entry (p, q) offers column c0 + q to row r0 + p; with it,
    the tile is read as its transpose: entry (p, q) offers column c0 + p to row r0 + q.
    Screened (not ``exact``) entries are re-scored from the unit rows xa[p] and xb[q].
    Each row keeps its k best by similarity descending, then index ascending, so that ties
    resolve deterministically whatever order the tiles come in.
    """
    p, q = mask.nonzero(as_tuple=True)  # (M,), (M,)
    if p.numel() == 0:
        return
    rows, cols = (q + r0, p + c0) if transpose else (p + r0, q + c0)
    vals = s[p, q] if exact else _rescore(xa, xb, p, q)
    k = best_v.shape[1]
    touched = torch.unique(rows)  # (U,) sorted
    all_r = torch.cat([touched.repeat_interleave(k), rows])
    all_c = torch.cat([best_i[touched].flatten(), cols])
    all_v = torch.cat([best_v[touched].flatten(), vals])
    # Lexicographic order (row asc, value desc, column asc) by stable sorts, last key first.
    order = torch.argsort(all_c, stable=True)
    order = order[torch.argsort(all_v[order], descending=True, stable=True)]
    order = order[torch.argsort(all_r[order], stable=True)]
    counts = torch.bincount(torch.searchsorted(touched, all_r[order]), minlength=len(touched))
    if bool((counts == counts[0]).all()):
        keep = order.view(len(touched), -1)[:, :k]
    else:  # rows received different numbers of candidates
        starts = torch.cumsum(counts, 0) - counts  # (U,)
        rank = torch.arange(len(order), device=order.device) - starts.repeat_interleave(counts)
        keep = order[rank < k].view(len(touched), k)
    best_v[touched] = all_v[keep]
    best_i[touched] = all_c[keep]


def _rescore(xa: torch.Tensor, xb: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exact dot products xa[p[m]] . xb[q[m]], in chunks of bounded memory."""
    out = torch.empty(len(p), dtype=xa.dtype, device=xa.device)
    step = max(1, (1 << 22) // xa.shape[1])
    for m0 in range(0, len(p), step):
        out[m0 : m0 + step] = (xa[p[m0 : m0 + step]] * xb[q[m0 : m0 + step]]).sum(dim=1)  # (m,)
    return out


class KnnGraph:
    """A directed k-nearest-neighbour graph: node i points to ``indices[i]``.

    Parameters
    ----------
    indices : (N, k) integer tensor or array
        Neighbours of each node; no self loops, no repeated neighbour within a row.
    weights : (N, k) floating-point tensor or array
        Edge weights aligned with ``indices`` (cosine similarities for ``knn_graph``).

    Undirected views come from :meth:`adjacency` and its converters, in three modes:
    ``"mean"`` A = (W + W^T) / 2 (the graph of Lu et al. 2022: a mutual pair keeps its
    weight, a one-way edge gets half), ``"max"`` the union with A_ij = max(W_ij, W_ji) over
    the directions present, ``"mutual"`` only reciprocal pairs, with the mean of their two
    directed weights.
    """

    def __init__(self, indices, weights, *, validate: bool = True):
        indices = as_tensor(indices, "indices")
        weights = as_tensor(weights, "weights")
        if validate:
            indices, weights = _check_lists(indices, weights)
        self.indices = indices
        self.weights = weights
        self._partner_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def n(self) -> int:
        """Number of nodes."""
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        """Out-degree of every node."""
        return self.indices.shape[1]

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def __repr__(self) -> str:
        return f"KnnGraph(n={self.n}, k={self.k}, device={self.device})"

    def _partners(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every directed edge i -> j: whether j -> i exists too, and that edge's weight."""
        if self._partner_cache is None and self.indices.is_cuda and self.weights.dtype in (torch.float32, torch.float64):
            self._partner_cache = _kernels.edge_partners(self.indices.contiguous(), self.weights.contiguous())
        if self._partner_cache is None:
            n, k = self.indices.shape
            recip = torch.empty((n, k), dtype=torch.bool, device=self.device)
            partner_w = torch.zeros((n, k), dtype=self.weights.dtype, device=self.device)
            step = max(1, (1 << 22) // (k * k))
            for r0 in range(0, n, step):
                idx = self.indices[r0 : r0 + step]  # (c, k)
                own = torch.arange(r0, r0 + len(idx), device=self.device)  # (c,)
                match = self.indices[idx] == own[:, None, None]  # (c, k, k): j's list holds i
                recip[r0 : r0 + step] = match.any(dim=2)
                partner_w[r0 : r0 + step] = (self.weights[idx] * match).sum(dim=2)
            self._partner_cache = (recip, partner_w)
        return self._partner_cache

    def _dense_edges(self, mode: str = "mean", weighted: bool = True, dtype=torch.float64):
        """The symmetric adjacency as two (N, k) arrays aligned with ``indices``.

        ``fwd[i, a]`` is A[i, j] for j = indices[i, a], carried by that directed edge;
        ``rev[i, a]`` is A[j, i] for a one-way edge (0 otherwise), since no edge of j
        carries it. Every nonzero A[i, j] appears exactly once in the two arrays.
        """
        _check_mode(mode)
        recip, partner_w = self._partners()
        w = self.weights.to(dtype) if weighted else torch.ones(self.indices.shape, dtype=dtype, device=self.device)
        pw = partner_w.to(dtype) if weighted else w
        zero = torch.zeros((), dtype=dtype, device=self.device)
        if mode == "mutual":
            return torch.where(recip, (w + pw) / 2, zero), torch.zeros_like(w)
        if mode == "mean" and weighted:
            return torch.where(recip, (w + pw) / 2, w / 2), torch.where(recip, zero, w / 2)
        # "max", and unweighted "mean" (every edge of the union counts 1)
        return torch.where(recip, torch.maximum(w, pw), w), torch.where(recip, zero, w)

    def _edges(self, mode: str = "mean", weighted: bool = True, dtype=torch.float64):
        """Ordered pairs (rows, cols, values) of the symmetric adjacency, each pair once."""
        fwd, rev = self._dense_edges(mode, weighted, dtype)
        recip, _ = self._partners()
        n, k = self.indices.shape
        src = torch.arange(n, device=self.device).repeat_interleave(k)  # (N k,)
        dst = self.indices.flatten()
        recip = recip.flatten()
        mutual = mode == "mutual"
        keep = recip if mutual else torch.ones_like(recip)  # directed edges carrying A[i, j]
        one_way = torch.zeros_like(recip) if mutual else ~recip  # edges also carrying A[j, i]
        rows = torch.cat([src[keep], dst[one_way]])
        cols = torch.cat([dst[keep], src[one_way]])
        return rows, cols, torch.cat([fwd.flatten()[keep], rev.flatten()[one_way]])

    def _csr_parts(self, mode: str, weighted: bool):
        rows, cols, vals = self._edges(mode, weighted, dtype=self.weights.dtype)
        order = torch.argsort(rows * self.n + cols)
        crow = torch.zeros(self.n + 1, dtype=torch.int64, device=self.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=self.n), 0)
        return crow, cols[order], vals[order]

    def adjacency(self, mode: str = "mean", weighted: bool = True) -> torch.Tensor:
        """Symmetric (N, N) adjacency as a torch sparse CSR tensor, without self loops.

        Columns are sorted within each row. ``weighted=False`` gives 1 for every edge.
        """
        crow, col, val = self._csr_parts(mode, weighted)
        with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                crow, col, val, size=(self.n, self.n), check_invariants=False
            )

    def to_scipy(self, mode: str = "mean", weighted: bool = True):
        """The adjacency as a ``scipy.sparse.csr_array`` (on the host)."""
        import scipy.sparse

        crow, col, val = (t.cpu().numpy() for t in self._csr_parts(mode, weighted))
        return scipy.sparse.csr_array((val, col, crow), shape=(self.n, self.n))

    def to_networkx(self, mode: str = "mean", weighted: bool = True):
        """The adjacency as an undirected ``networkx.Graph`` with edge attribute ``weight``."""
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(self.n))
        coo = self.to_scipy(mode, weighted).tocoo()
        upper = coo.row < coo.col
        g.add_weighted_edges_from(
            zip(coo.row[upper].tolist(), coo.col[upper].tolist(), coo.data[upper].tolist())
        )
        return g

    def to_cugraph(self, mode: str = "mean", weighted: bool = True):
        """The adjacency as an undirected ``cugraph.Graph`` (RAPIDS), built on the GPU.

        Each undirected edge is passed once (row < column) with its weight in column
        "weight"; the graph must be on a CUDA device.
        """
        try:
            import cudf
            import cugraph
        except ImportError as exc:
            raise GpuGraphError(
                "to_cugraph needs RAPIDS cuGraph and cuDF, which are not installed; "
                "pip install cugraph-cu12 cudf-cu12 (see docs.rapids.ai/install), "
                "or use to_scipy / to_networkx"
            ) from exc
        if not self.indices.is_cuda:
            raise ValueError(f"to_cugraph needs a graph on a CUDA device, this one is on {self.device}; "
                             "call .to('cuda') first")
        rows, cols, vals = self._edges(mode, weighted, dtype=self.weights.dtype)
        upper = rows < cols
        frame = cudf.DataFrame({name: _kernels._arg(t[upper]) for name, t in (("src", rows), ("dst", cols), ("weight", vals))})
        g = cugraph.Graph(directed=False)
        g.from_cudf_edgelist(frame, source="src", destination="dst", edge_attr="weight", renumber=False)
        return g

    def to(self, device) -> KnnGraph:
        """A copy of this graph on ``device``."""
        return KnnGraph(self.indices.to(device), self.weights.to(device), validate=False)


def _check_mode(mode) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _check_lists(indices: torch.Tensor, weights: torch.Tensor):
    if indices.dim() != 2:
        raise ValueError(f"indices must be 2-D (N, k), got shape {tuple(indices.shape)}")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
    if weights.shape != indices.shape:
        raise ValueError(
            f"weights must have the shape of indices {tuple(indices.shape)}, "
            f"got {tuple(weights.shape)}"
        )
    if not weights.dtype.is_floating_point:
        raise TypeError(f"weights must be floating point, got dtype {weights.dtype}")
    if weights.device != indices.device:
        raise ValueError(f"indices are on {indices.device} but weights on {weights.device}")
    n, k = indices.shape
    indices = indices.to(torch.int64)
    if n and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"indices must lie in [0, N) = [0, {n}), got values outside")
    own = torch.arange(n, device=indices.device)[:, None]
    if bool((indices == own).any()):
        row = int((indices == own).any(dim=1).nonzero()[0])
        raise ValueError(f"node {row} lists itself as a neighbour; self loops are not allowed")
    srt = indices.sort(dim=1).values
    if k > 1 and bool((srt[:, 1:] == srt[:, :-1]).any()):
        row = int((srt[:, 1:] == srt[:, :-1]).any(dim=1).nonzero()[0])
        raise ValueError(f"node {row} lists the same neighbour twice; each must appear once")
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights contain NaN or Inf")
    return indices, weights
