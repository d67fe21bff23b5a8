"""Exact cosine k-nearest-neighbour graphs, built in tiles.

The similarity matrix S = X X^T of the unit rows is symmetric, so the tiles of its upper
triangle are computed once each and every off-diagonal tile feeds the running top-k of both
its row block and its column block: half the GEMM work of a plain blocked search. Selection
keeps a running threshold per row (the current k-th best similarity); after a row block's
diagonal tile has been seen, only the few tile entries at or above that threshold are
gathered and merged, so selection costs a comparison pass per tile, not a sort.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from gpugraph import _kernels, _memory, _progress
from gpugraph._precision import bf16_product, fp32_matmul
from gpugraph._tensor import resolve_device, unit_rows
from gpugraph.graph import KnnGraph
from gpugraph.sources import Source, as_source, parse_memory

__all__ = ["KnnGraph", "knn_graph"]

_PRECISIONS = ("exact", "bf16", "tf32")


def knn_graph(
    x, k: int = 10, *, precision: str = "exact", tile: int | None = None, device=None, progress=None,
    memory=None,
) -> KnnGraph:
    """Exact cosine k-nearest-neighbour graph over the rows of ``x``.

    Row i of the result lists the k rows most similar to row i by cosine similarity
    cos(x_i, x_j) = x_i . x_j / (|x_i| |x_j|), in decreasing order of similarity, never i
    itself. Exact duplicates of row i are other nodes and are listed with weight 1. Ties are
    broken towards the lower index, so the result is deterministic.

    Parameters
    ----------
    x : (N, D) floating-point matrix: a torch tensor, NumPy or CuPy array in memory, or out
        of core: a path to an .npy file, a NumPy memmap (``np.load(path, mmap_mode="r")``), a
        zarr array
        One sample per row. float16/bfloat16/float32 are computed in float32, float64 in
        float64. An out-of-core X is read a block of rows at a time for both sides of each
        tile (upcast block by block), so memory stays O(N k + tiles), never O(N D).
    k : int
        Neighbours per node, 1 <= k < N.
    precision : {"exact", "bf16", "tf32"}
        Arithmetic of the similarity tiles. Every choice returns the exact neighbours and
        exact weights: "exact" computes the tiles in IEEE arithmetic of the compute dtype,
        whatever torch's matmul precision settings say (TF32 on CUDA, bf16 in oneDNN on the
        CPU), and leaves those settings as it found them; "bf16" (and "tf32", CUDA only)
        computes them in low precision only to screen candidates, keeping every entry
        within a proven rounding bound of the running threshold, and re-scores the kept
        pairs in the compute dtype. Screening pays where low-precision GEMM is much faster
        (GPU tensor cores); on the CPU "exact" is usually faster.
    tile : int, optional
        Rows per tile. By default chosen from ``memory`` (at most 4096 on the CPU, 8192 on
        CUDA).
    memory : int or str, optional
        Bytes the tiles may take, e.g. ``"2GB"`` or ``"512MiB"``. Default: an eighth of the
        memory free on the compute device.
    device : torch.device or str, optional
        Where to compute; the result lives there. Default: x's device. A host ``x`` with
        ``device="cuda"`` is copied to the GPU when it fits in half the free GPU memory,
        and otherwise streamed to it tile by tile from pinned host memory.
    progress : bool or callable, optional
        A bar over the tiles: None shows it only for long builds (N >= 20 000) when stderr
        is a terminal; a callable is called as ``progress(tiles_done, tiles)`` after each
        tile, e.g. to log or to estimate the time left.

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
    each tile in one streaming pass (gpugraph/kernels/topk.cu); elsewhere torch code does.

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
    src = as_source(x)
    n, d = src.shape
    _check_k(k, n)
    target = resolve_device(device, src.device)
    _check_precision(precision, target)
    _check_tile(tile)
    budget = parse_memory(memory)
    if src.in_memory:
        rows = _RowBlocks.place(unit_rows(src.tensor, src.name), target)
    else:
        rows = _RowBlocks(src, target, streamed=True)
    tile = tile if tile is not None else _default_tile(target, rows.dtype, k, budget)
    nb = len(_blocks(n, tile, k))
    bar = _progress.bar(progress, nb * (nb + 1) // 2, "tile", "knn_graph", long=n >= 20_000)
    if target.type == "cuda" and rows.dtype == torch.float32 and k <= _kernels.MAX_K:
        indices, weights = _knn_cuda(rows, k, tile, precision, bar=bar)
    else:
        if target.type == "cuda":
            why = f"k={k} > {_kernels.MAX_K}" if k > _kernels.MAX_K else f"{rows.dtype} rows"
            warnings.warn(
                f"knn_graph: the CUDA selection kernel takes float32 rows and k <= {_kernels.MAX_K}; "
                f"with {why} the slower torch selection runs instead"
                + ("; precision='tf32' has no screen there, so the tiles are computed exactly"
                   if precision == "tf32" else ""),
                stacklevel=2,
            )
        indices, weights = _knn_tiled(rows, k, tile, "exact" if precision == "tf32" else precision, bar=bar)
    bar.close()
    meta = {"metric": "cosine", "n": n, "d": d, "k": k, "dtype": str(src.dtype).replace("torch.", ""),
            "precision": precision}
    return KnnGraph(indices, weights.to(torch.float32), validate=False, meta=meta)


def _check_tile(tile) -> None:
    if tile is None:
        return
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"tile must be a positive integer (rows per tile) or None, got {tile!r}")
    if tile < 1:
        raise ValueError(f"tile must be a positive integer (rows per tile) or None, got {tile}")


def _check_k(k, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k < n:
        raise ValueError(
            f"k must satisfy 1 <= k < N (a node has N - 1 others), got k={k} with N={n}"
        )


def _check_precision(precision, device: torch.device) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(
            "precision='tf32' needs a CUDA device (TF32 is a GPU tensor-core format); "
            "on the CPU use 'bf16' or 'exact'"
        )


def _default_tile(device: torch.device, dtype: torch.dtype, k: int, budget: int | None = None) -> int:
    """Rows per tile so that the live temporaries of one tile fit the memory budget (default:
    the shared one): the tile and its transposed copy or a second mask (2 x size bytes an
    entry) and two boolean masks; GEMM-friendly caps."""
    size = torch.tensor([], dtype=dtype).element_size()
    cap = 8192 if device.type == "cuda" else 4096
    side = int(math.sqrt((budget or _memory.budget(device)) / (2 * size + 2)))
    return max(2 * (k + 1), min(cap, side))


class _RowBlocks:
    """Unit rows handed out by block on the compute device.

    Resident: slices of a tensor already there. Streamed: copies from (pinned) host memory,
    for an X larger than the GPU, or blocks read from an out-of-core Source, checked and
    normalised as they are read; the two most recent blocks are kept, which is all the
    tile loops reuse (the outer block across its inner loop).
    """

    def __init__(self, xn, device: torch.device, streamed: bool):
        self.xn, self.device, self.streamed = xn, device, streamed  # xn: unit rows, or a Source
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
            if isinstance(self.xn, Source):  # out of core: read, check and normalise the block
                block = unit_rows(self.xn.rows(a0, a1), self.xn.name, offset=a0)
            else:
                block = self.xn[a0:a1]
            self._recent[key] = block.to(self.device, non_blocking=True)
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
              transpose_copy: bool = True, bar=_progress.SILENT) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the upper-triangular tiles of X X^T: GEMM by torch, selection by topk.cu.

    Diagonal tiles are computed exactly first; off-diagonal tiles in ``precision``, each
    offered to its row block and, transposed, to its column block: through a contiguous
    copy (coalesced reads, one more pass over the tile), or with ``transpose_copy=False``
    read in place with strides (benchmarks/bench_gpu.py times both). Screened candidates
    are re-scored inside the kernel from the unit rows of the two blocks; a screened tile
    that would keep more than 64 candidates per row (tight clusters) is recomputed exactly,
    as on the CPU path, rather than re-scored entry by entry.
    """
    n, device = rows.n, rows.device
    err = _screen_error(precision, rows.d)
    best_v = torch.full((n, k), -math.inf, dtype=torch.float32, device=device)  # (N, k)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=device)  # (N, k)
    blocks = _blocks(n, tile, k)
    for a0, a1 in blocks:
        xa = rows.get(a0, a1)
        _kernels.topk_merge(_gemm(xa, xa, "exact"), a0, a0, best_v, best_i)
        bar.update(1)
    for bi, (a0, a1) in enumerate(blocks):
        xa = rows.get(a0, a1)
        for b0, b1 in blocks[bi + 1 :]:
            xb = rows.get(b0, b1)
            s = _gemm(xa, xb, precision)  # (ta, tb)
            margin = err
            if err > 0 and (_too_many(s >= (best_v[a0:a1, k - 1] - err)[:, None])
                            or _too_many(s >= (best_v[b0:b1, k - 1] - err)[None, :])):
                s, margin = _gemm(xa, xb, "exact"), 0.0
            _kernels.topk_merge(s, a0, b0, best_v, best_i, margin=margin, xr=xa, xc=xb)
            if transpose_copy:
                _kernels.topk_merge(s.T.contiguous(), b0, a0, best_v, best_i, margin=margin, xr=xb, xc=xa)
            else:
                _kernels.topk_merge(s, b0, a0, best_v, best_i, transpose=True, margin=margin, xr=xb, xc=xa)
            bar.update(1)
    return best_i, best_v.clamp_(-1.0, 1.0)


def _gemm(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """a @ b.T in the arithmetic ``precision`` names, whatever torch's global settings say:
    "exact" in IEEE arithmetic of a's dtype, "tf32" with TF32 inputs, "bf16" with bf16
    inputs; the last two with float32 accumulation and result."""
    if precision == "bf16":
        return bf16_product(a, b)
    if a.dtype != torch.float32:
        return a @ b.T
    with fp32_matmul(a.device.type, "tf32" if precision == "tf32" else "ieee"):
        return a @ b.T


def _knn_tiled(
    rows: _RowBlocks, k: int, tile: int, precision: str = "exact", bar=_progress.SILENT
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the upper-triangular tiles of X X^T; device-agnostic torch code.

    With ``precision="bf16"`` tiles are computed from bf16 inputs only to screen
    candidates: an entry is kept if it is within the rounding bound of the running
    threshold, and every kept pair is re-scored in the precision of X. The neighbours
    and weights are those of the exact search; a tile whose screen keeps too many
    candidates (tightly clustered data) is recomputed exactly instead.
    """
    n, device, dtype = rows.n, rows.device, rows.dtype
    err = _screen_error(precision, rows.d)
    exact = precision == "exact"
    best_v = torch.full((n, k), -math.inf, dtype=dtype, device=device)  # (N, k)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=device)  # (N, k)
    blocks = _blocks(n, tile, k)
    # Diagonal tiles first: afterwards every row holds k exact candidates and a threshold.
    for a0, a1 in blocks:
        xa = rows.get(a0, a1)
        s = _gemm(xa, xa, precision)  # (ta, ta)
        s.fill_diagonal_(-math.inf)
        cut = torch.topk(s, k, dim=1, sorted=False).values.amin(dim=1)  # (ta,)
        # A true top-k entry of the tile is at most 2 err below the k-th screened value.
        mask = s >= (cut - 2 * err)[:, None]  # (ta, ta), about k per row
        tile_exact = exact
        if not exact and _too_many(mask):
            s, tile_exact = _gemm(xa, xa, "exact"), True
            s.fill_diagonal_(-math.inf)
            mask = s >= torch.topk(s, k, dim=1, sorted=False).values.amin(dim=1)[:, None]
        _offer(best_v, best_i, xa, xa, a0, a0, s, mask, transpose=False, exact=tile_exact)
        s = mask = None
        bar.update(1)
    for bi, (a0, a1) in enumerate(blocks):
        xa = rows.get(a0, a1)
        for b0, b1 in blocks[bi + 1 :]:
            xb = rows.get(b0, b1)
            s = _gemm(xa, xb, precision)  # (ta, tb): rows a0..a1 against columns b0..b1
            row_mask = s >= (best_v[a0:a1, k - 1] - err)[:, None]  # candidates for rows of a
            col_mask = s >= (best_v[b0:b1, k - 1] - err)[None, :]  # candidates for rows of b
            tile_exact = exact
            if not exact and (_too_many(row_mask) or _too_many(col_mask)):
                s, tile_exact = _gemm(xa, xb, "exact"), True
                row_mask = s >= best_v[a0:a1, k - 1, None]
                col_mask = s >= best_v[None, b0:b1, k - 1]
            _offer(best_v, best_i, xa, xb, a0, b0, s, row_mask, transpose=False, exact=tile_exact)
            _offer(best_v, best_i, xa, xb, b0, a0, s, col_mask, transpose=True, exact=tile_exact)
            s = row_mask = col_mask = None  # freed before the next tile is computed
            bar.update(1)
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
