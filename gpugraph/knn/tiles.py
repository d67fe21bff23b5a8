"""The one tile scheduler of every exact k-NN search, and the selectors it drives.

The similarity matrix S = X X^T of unit rows is never held: :func:`walk` computes it a tile
at a time (a GEMM by torch in the arithmetic the precision names) and hands each tile to a
selector, which merges the tile's entries into the running top-k of the tile's rows and,
for an off-diagonal tile of the symmetric matrix, of its columns: each pair of rows is
computed once. One search (``gpugraph.knn_graph``) walks the upper tiles of one block of
rows; a distributed search walks its own block, then pairs of blocks that meet on a ring.

One value per pair: a tile's GEMM value of a pair depends on the tile's shape, the precision
and the BLAS, so no list keeps it. The selector keeps every entry within the tile's error
bound (the margin: :func:`pair_error`, plus the screen's bound for a low-precision tile) of
its row's or column's k-th value, re-scores it with the canonical :func:`cosine` (products
summed exactly as multiples of 2^-61, so in any order: the same bits in torch, numba and
CUDA), and merges by that value, then by index. So the neighbours, their weights and every
tie are the same whatever the tile, the precision, the device's selector or the number of
ranks.

Screening (``precision`` "bf16" or "tf32"): off-diagonal tiles are computed in low
precision and the margin widens by the screen's proven error bound. A tile whose screen
would keep more than 64 candidates per row is recomputed exactly instead. Diagonal tiles
are always exact, so every row has candidates and a threshold before the first screened
tile.

Selectors (all keep each row's k best by value descending, then global index ascending):

- :class:`TorchSelector`: the readable statement in torch (a mask, then a sort-merge); the
  reference, and the path for devices and dtypes the compiled ones do not take.
- :class:`CompiledSelector`: one pass over the tile in compiled code (gpugraph/kernels/topk_cpu.py).
- :class:`CudaSelector`: the CuPy kernel gpugraph/kernels/topk.cu.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from gpugraph._util import progress as _progress
from gpugraph.kernels import cuda as _kernels
from gpugraph.kernels.threads import torch_region
from gpugraph.knn.precision import bf16_product, fp32_matmul
from gpugraph.knn.rows import unit_rows
from gpugraph.knn.sources import Source


class TopK:
    """The running k best (similarity, global index) of some rows; (-inf, -1) while empty.

    While a search runs, each row is a heap whose worst entry, the k-th value, is last (see
    gpugraph/kernels/topk_cpu.py; a list sorted best first is one): :meth:`sort` orders them.
    """

    def __init__(self, n: int, k: int, dtype: torch.dtype, device):
        self.values = torch.full((n, k), -math.inf, dtype=dtype, device=device)  # (n, k)
        self.indices = torch.full((n, k), -1, dtype=torch.int64, device=device)  # (n, k)

    def sort(self) -> None:
        """Order each row best first: value descending, then index ascending."""
        if self.values.device.type == "cpu" and self.values.dtype in (torch.float32, torch.float64):
            from gpugraph.kernels.topk_cpu import sort_rows

            sort_rows(self.values.numpy(), self.indices.numpy())
            return
        self.values, self.indices = _best_first(self.values, self.indices, self.values.shape[1])

    def merge(self, other: TopK, at: int = 0) -> None:
        """Keep the k best of both lists (which hold disjoint columns) for this list's rows
        at .. at + len(other), best first."""
        rows = slice(at, at + other.values.shape[0])
        self.values[rows], self.indices[rows] = _best_first(
            torch.cat([self.values[rows], other.values], dim=1),
            torch.cat([self.indices[rows], other.indices], dim=1),
            self.values.shape[1],
        )


def _best_first(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row of (v, i), best first: value descending, then index ascending."""
    order = torch.argsort(i, dim=1, stable=True)
    order = order.gather(1, torch.argsort(v.gather(1, order), dim=1, descending=True, stable=True))[:, :k]
    return v.gather(1, order), i.gather(1, order)


class RowBlocks:
    """Unit rows handed out by block on the compute device.

    Resident: slices of a tensor already there. Streamed: copies from (pinned) host memory,
    for an X larger than the GPU, or blocks read from an out-of-core Source, checked and
    normalised as they are read; the two most recent blocks are kept, which is all the
    tile loops reuse (the outer block across its inner loop).
    """

    def __init__(self, xn, device: torch.device | None = None, streamed: bool = False, rows: slice | None = None):
        self.xn, self.streamed = xn, streamed  # xn: unit rows, or a Source
        self.device = device if device is not None else xn.device
        self.rows = rows if rows is not None else slice(0, xn.shape[0])  # the rows of xn handed out
        self._recent: dict[tuple[int, int], torch.Tensor] = {}

    def view(self, r0: int, r1: int) -> RowBlocks:
        """These blocks' rows r0..r1 (no copy, nothing read)."""
        start = self.rows.start
        return RowBlocks(self.xn, self.device, self.streamed, slice(start + r0, start + r1))

    @classmethod
    def of(cls, src: Source, device: torch.device) -> RowBlocks:
        """The unit rows of ``src`` on ``device``: in memory normalised now, in one pass that
        also checks them unless ``src.checked``; out of core read, checked and normalised a
        block at a time as the walk asks for them."""
        if src.tensor is None:
            return cls(src, device, streamed=True)
        return cls.place(unit_rows(src.tensor, src.name, refuse=not src.checked), device)

    @classmethod
    def place(cls, xn: torch.Tensor, device: torch.device) -> RowBlocks:
        if xn.device == device:
            return cls(xn, device, streamed=False)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if xn.numel() * xn.element_size() > free // 2:
                return cls(xn.pin_memory(), device, streamed=True)
        return cls(xn.to(device), device, streamed=False)

    @property
    def n(self) -> int:
        return self.rows.stop - self.rows.start

    @property
    def d(self) -> int:
        return self.xn.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.xn.dtype

    def get(self, a0: int, a1: int) -> torch.Tensor:
        a0, a1 = a0 + self.rows.start, a1 + self.rows.start
        if not self.streamed:
            return self.xn[a0:a1]
        key = (a0, a1)
        if key not in self._recent:
            if len(self._recent) == 2:
                self._recent.pop(next(iter(self._recent)))
            if isinstance(self.xn, Source):  # out of core: read, check and normalise the block
                block = unit_rows(self.xn.rows(a0, a1), self.xn.name, offset=a0, refuse=not self.xn.checked)
            else:
                block = self.xn[a0:a1]
            self._recent[key] = block.to(self.device, non_blocking=True)
        return self._recent[key]


def blocks(n: int, tile: int, k: int) -> list[tuple[int, int]]:
    """Split 0..n into balanced blocks of at least k + 1 rows where n allows (so that a
    diagonal tile gives each of its rows k candidates)."""
    if n == 0:
        return []
    tile = max(tile, 2 * (k + 1))
    count = max(1, math.ceil(n / tile))
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def screen_error(precision: str, d: int) -> float:
    """Bound on |s_low - s| for a dot product of unit vectors of dimension d (see knn_graph)."""
    if precision == "bf16":
        return 3.01 * 2.0**-8 + d * 2.0**-23
    if precision == "tf32":
        return 2.01 * 2.0**-10 + d * 2.0**-23
    return 0.0


def pair_error(dtype: torch.dtype, d: int) -> float:
    """Bound on |GEMM value - :func:`cosine`| for unit rows of dimension d computed in
    ``dtype``: the GEMM's rounding (gamma_d |a||b|), the unit rows' norms off 1 by at most
    (d + 8) u (knn.rows.unit_rows), and the canonical value's own rounding (u / 2); with
    u = 2^-24 (float32) or 2^-53 (float64): (2 d + 16) u."""
    u = 2.0**-53 if dtype == torch.float64 else 2.0**-24
    return (2 * d + 16) * u


def gemm(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """a @ b.T in the arithmetic ``precision`` names, whatever torch's global settings say:
    "exact" in IEEE arithmetic of a's dtype, "tf32" with TF32 inputs, "bf16" with bf16
    inputs; the last two with float32 accumulation and result. On the CPU a small product
    runs on one thread while the machine is busy (kernels.threads.torch_region)."""
    if a.device.type == "cpu":
        with torch_region(a.shape[0] * b.shape[0] * a.shape[1] // 32):
            return _gemm(a, b, precision)
    return _gemm(a, b, precision)


def _gemm(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    if precision == "bf16":
        return bf16_product(a, b)
    if a.dtype != torch.float32:
        return a @ b.T
    with fp32_matmul(a.device.type, "tf32" if precision == "tf32" else "ieee"):
        return a @ b.T


def tiles(n_a: int, n_b: int | None, tile: int, k: int) -> list[tuple[tuple, tuple]]:
    """The tiles :func:`walk` computes over n_a rows against n_b, in order: with ``n_b`` None
    (a block against itself) the diagonal tiles first, then the upper ones; else every tile."""
    ta = blocks(n_a, tile, k)
    if n_b is None:
        return [(a, a) for a in ta] + [(a, b) for i, a in enumerate(ta) for b in ta[i + 1 :]]
    tb = blocks(n_b, tile, k)
    return [(a, b) for a in ta for b in tb]


def walk(
    selector,
    top_a: TopK,
    rows_a: RowBlocks,
    a_id: int,
    *,
    top_b: TopK | None = None,
    rows_b: RowBlocks | None = None,
    b_id: int = 0,
    a_at: int = 0,
    b_at: int = 0,
    tile: int,
    precision: str = "exact",
    bar=_progress.SILENT,
    start: int = 0,
    after=None,
) -> None:
    """Offer every pair (row of A, row of B) once to both rows' running top-k.

    ``rows_b`` None: B is A (the upper tiles of A against itself; a row never meets itself).
    ``a_id``/``b_id``: global id of the first row of A/B; ``a_at``/``b_at``: where A's/B's
    rows start in ``top_a``/``top_b``. ``start``: tiles already offered (a resumed walk
    skips them); ``after(t)`` is called once the first t tiles are done.
    """
    same = rows_b is None
    if rows_b is None or top_b is None:
        rows_b, top_b, b_id, b_at = rows_a, top_a, a_id, a_at
    k = top_a.values.shape[1]
    err = screen_error(precision, rows_a.d)
    exact = pair_error(rows_a.dtype, rows_a.d)
    if start:
        bar.update(start)
    for t, ((a0, a1), (b0, b1)) in enumerate(tiles(rows_a.n, None if same else rows_b.n, tile, k)):
        if t < start:
            continue
        xa, xb = rows_a.get(a0, a1), rows_b.get(b0, b1)
        diagonal = same and a0 == b0
        screened = err > 0 and not diagonal
        s = gemm(xa, xb, precision if screened else "exact")  # (ta, tb)
        if screened and (
            _too_many(s >= (top_a.values[a_at + a0 : a_at + a1, -1] - err)[:, None])
            or _too_many(s >= (top_b.values[b_at + b0 : b_at + b1, -1] - err)[None, :])
        ):
            s, screened = gemm(xa, xb, "exact"), False
        margin = exact + (err if screened else 0.0)
        selector(s, xa, xb, margin, top_a, a_at + a0, a_id + a0, top_b, b_at + b0, b_id + b0, not diagonal)
        del s  # freed before the next tile is computed
        if after is not None:
            after(t + 1)
        bar.update(1)


def _too_many(mask: torch.Tensor) -> bool:
    """Whether a screen kept more than 64 candidates per row on average."""
    return int(mask.sum()) > 64 * max(mask.shape)


class TorchSelector:
    """Selection in torch: the entries at or above each row's threshold are gathered with a
    mask and merged with the row's list by a sort; the readable reference of the others."""

    def __call__(self, s, xa, xb, margin, top_a, ra, a_id, top_b, rb, b_id, columns: bool) -> None:
        k = top_a.values.shape[1]
        lo, hi = max(a_id, b_id), min(a_id + s.shape[0], b_id + s.shape[1])
        if lo < hi:  # pairs of a row with itself never count
            own = torch.arange(lo, hi, device=s.device)
            s[own - a_id, own - b_id] = -math.inf
        norms = (fixed_norms(xa), fixed_norms(xb)) if margin > 0 else None
        mask = s >= self._cut(s, top_a.values[ra : ra + s.shape[0], -1], margin, k, dim=1)[:, None]
        _offer(top_a.values, top_a.indices, xa, xb, ra, b_id, s, mask, transpose=False, norms=norms)
        if columns:
            mask = s >= self._cut(s, top_b.values[rb : rb + s.shape[1], -1], margin, k, dim=0)[None, :]
            _offer(top_b.values, top_b.indices, xa, xb, rb, a_id, s, mask, transpose=True, norms=norms)

    @staticmethod
    def _cut(s, kth, margin: float, k: int, dim: int):
        """Per-row threshold: the k-th value so far, less the margin; while a row has fewer
        than k candidates, the tile's own k-th value less twice the margin (a true top-k
        entry of the tile is screened at most one margin low, the tile's k-th one high)."""
        cut = kth - margin
        if bool(torch.isinf(kth).any()):
            own = torch.topk(s, min(k, s.shape[dim]), dim=dim).values.select(dim, -1)
            cut = torch.maximum(cut, own - 2 * margin)
        return cut


def _offer(best_v, best_i, xa, xb, r0, c0, s, mask, *, transpose: bool, norms=None) -> None:
    """Merge the masked entries of tile ``s`` = xa xb^T into the running top-k of their rows.

    Without ``transpose``, masked entry (p, q) offers column c0 + q to row r0 + p; with it,
    the tile is read as its transpose: entry (p, q) offers column c0 + p to row r0 + q.
    With ``norms`` (the fixed_norms of xa and xb) entries are re-scored by :func:`cosine`
    from the unit rows xa[p] and xb[q]; without, the tile's values are taken as they are.
    Each row keeps its k best by similarity descending, then index ascending, so that ties
    resolve deterministically whatever order the tiles come in.
    """
    p, q = mask.nonzero(as_tuple=True)  # (M,), (M,)
    if p.numel() == 0:
        return
    rows, cols = (q + r0, p + c0) if transpose else (p + r0, q + c0)
    vals = s[p, q] if norms is None else _rescore(xa, xb, norms[0], norms[1], p, q)
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


def _rescore(
    xa: torch.Tensor, xb: torch.Tensor, na: torch.Tensor, nb: torch.Tensor, p: torch.Tensor, q: torch.Tensor
) -> torch.Tensor:
    """:func:`cosine` of the pairs (xa[p[m]], xb[q[m]]), in chunks of bounded memory."""
    out = torch.empty(len(p), dtype=xa.dtype, device=xa.device)
    step = max(1, (1 << 22) // xa.shape[1])
    for m0 in range(0, len(p), step):
        pm, qm = p[m0 : m0 + step], q[m0 : m0 + step]
        out[m0 : m0 + step] = cosine(xa[pm], xb[qm], na[pm], nb[qm])  # (m,)
    return out


SCALE = 2.0**61


def fixed_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M,) int64 a[m] . b[m] of (M, D) unit rows as gpugraph/kernels/topk_cpu.py's fixed_dot
    takes it: each product rounded to the nearest multiple of 2^-61 (ties to even) and the
    integers summed, exactly, so torch may order the sum as it likes on any device."""
    return torch.round(a.to(torch.float64) * b.to(torch.float64) * SCALE).to(torch.int64).sum(dim=1)


def fixed_norms(x: torch.Tensor) -> torch.Tensor:
    """(N,) int64 :func:`fixed_dot` of each row of x with itself."""
    return fixed_dot(x, x)


def cosine(
    a: torch.Tensor, b: torch.Tensor, na: torch.Tensor | None = None, nb: torch.Tensor | None = None
) -> torch.Tensor:
    """The canonical similarity of the unit rows a[m] and b[m] ((M, D) each), as
    gpugraph/kernels/topk_cpu.py defines it: ab / sqrt(aa bb) in float64 from the
    :func:`fixed_dot` integers (``na``, ``nb``: the rows' :func:`fixed_norms` when known),
    clamped to [-1, 1] and rounded to a's dtype."""
    na = fixed_norms(a) if na is None else na
    nb = fixed_norms(b) if nb is None else nb
    product = na.to(torch.float64) * nb.to(torch.float64)
    # torch's vectorised CPU sqrt (SLEEF, 0.5001 ulp) is not correctly rounded; NumPy's is, and
    # so is CUDA's (IEEE)
    root = torch.from_numpy(np.sqrt(product.numpy())) if product.device.type == "cpu" else torch.sqrt(product)
    c = fixed_dot(a, b).to(torch.float64) / root
    return c.clamp(-1.0, 1.0).to(a.dtype)


class CompiledSelector:
    """One compiled pass over each tile (gpugraph/kernels/topk_cpu.py); CPU tensors."""

    def __init__(self, k: int, dtype: torch.dtype):
        from gpugraph.kernels.topk_cpu import Workspace

        self.workspace = Workspace(k, torch.empty(0, dtype=dtype).numpy().dtype)

    def __call__(self, s, xa, xb, margin, top_a, ra, a_id, top_b, rb, b_id, columns: bool) -> None:
        ta, tb = s.shape
        col_v, col_i = (
            (top_b.values[rb : rb + tb].numpy(), top_b.indices[rb : rb + tb].numpy()) if columns else (None, None)
        )
        self.workspace.select(
            s.numpy(),
            top_a.values[ra : ra + ta].numpy(),
            top_a.indices[ra : ra + ta].numpy(),
            a_id,
            col_v,
            col_i,
            b_id,
            margin,
            xa.numpy() if margin > 0 else None,
            xb.numpy() if margin > 0 else None,
        )


class CudaSelector:
    """The CuPy kernel topk.cu, one launch per side of a tile: the columns' side reads the
    tile through a contiguous transposed copy (coalesced reads, one more pass over the
    tile), or with ``transpose_copy=False`` in place with strides (benchmarks/bench_gpu.py
    times both)."""

    def __init__(self, transpose_copy: bool = True):
        self.transpose_copy = transpose_copy

    def __call__(self, s, xa, xb, margin, top_a, ra, a_id, top_b, rb, b_id, columns: bool) -> None:
        na, nb = (fixed_norms(xa), fixed_norms(xb)) if margin > 0 else (None, None)
        _kernels.topk_merge(
            s, ra, b_id, top_a.values, top_a.indices, row_id0=a_id, margin=margin, xr=xa, xc=xb, nr=na, nc=nb
        )
        if not columns:
            return
        if self.transpose_copy:
            _kernels.topk_merge(
                s.T.contiguous(),
                rb,
                a_id,
                top_b.values,
                top_b.indices,
                row_id0=b_id,
                margin=margin,
                xr=xb,
                xc=xa,
                nr=nb,
                nc=na,
            )
        else:
            _kernels.topk_merge(
                s,
                rb,
                a_id,
                top_b.values,
                top_b.indices,
                transpose=True,
                row_id0=b_id,
                margin=margin,
                xr=xb,
                xc=xa,
                nr=nb,
                nc=na,
            )
