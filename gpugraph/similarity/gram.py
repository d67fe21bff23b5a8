"""Sums over the entries of two Gram matrices, in float64 and bounded memory.

Dense LSim and CKA both reduce to the same sums over K = A A^T and L = B B^T of two
representations A (N, D1), B (N, D2) of the same samples:

    rowdot(A, B)[i] = sum_j K[i, j] L[i, j]          (LSim: the dot of two adjacency rows)
    total(A, B)     = sum_ij K[i, j] L[i, j] = |A^T B|_F^2     (CKA: HSIC)

Each has two forms, and :func:`rowdot` / :func:`total` take the one with fewer FLOPs:

- feature form: through the D1 x D2 matrix A^T B, taken a column block of B at a time so
  that no more than the budget is held: 4 N D1 D2 FLOPs for rowdot (2 N D1 D2 for total);
- Gram form: through N x N tiles of K and L, a block of rows against a block of columns:
  2 N^2 (D1 + D2) FLOPs.

Neither form holds an N x N, D1 x D2 or float64 N x D array: the rows are read from the
layer's own tensor a block at a time, scaled (and shifted) on the fly by :class:`Rows`.
Block sizes come from the shared memory budget (gpugraph._util.memory).
"""

from __future__ import annotations

import math

import torch

from gpugraph._util import memory as _memory
from gpugraph.knn.sources import as_source

_F64 = 8  # bytes


class Rows:
    """A layer's rows as float64 blocks: row i is ((x[i] / d[i] for each divisor d) - shift) / after[i].

    Reads the layer's own :class:`~gpugraph.knn.sources.Source` a block at a time (in memory or
    on disk) and keeps O(N + D) factors, never a converted copy of x.
    """

    def __init__(self, x, divisors: tuple = (), shift: torch.Tensor | None = None, after: torch.Tensor | None = None):
        self.src = as_source(x)
        self.divisors, self.shift, self.after = divisors, shift, after  # after: (N,) divisors past the shift

    @classmethod
    def unit(cls, x, name: str = "x") -> Rows:
        """The rows of x scaled to unit L2 norm (each divided by its largest |entry| first,
        then by the norm of the result, so neither overflows nor underflows)."""
        src = as_source(x, name)
        m = src.check(nonzero=True).to(torch.float64)  # (N,)
        norms = torch.empty_like(m)
        scaled = cls(src, (m,))
        for r0, r1 in scaled.blocks(_row_step(src.d, src.device)):
            norms[r0:r1] = torch.linalg.vector_norm(scaled.block(r0, r1), dim=1)
        return cls(src, (m, norms))

    @classmethod
    def centred(cls, x, name: str = "x", scale: float | None = None, constant_ok: bool = False) -> Rows:
        """The rows of x minus their mean, all divided by ``scale`` (default: the largest
        |entry| of x; a global scale, which CKA does not see, so that no square overflows).
        Refuses a representation that is constant across samples (CKA is 0 / 0 there)
        unless ``constant_ok`` (its centred rows are then zero)."""
        src = as_source(x, name)
        top = src.check(nonzero=False).amax().to(torch.float64)
        if src.n < 2 or (float(top) == 0.0 and not constant_ok):
            raise ValueError(_constant_message(name, src.n))
        if scale is not None:
            top = torch.tensor(scale, dtype=torch.float64, device=src.device)
        elif float(top) == 0.0:
            top = torch.ones((), dtype=torch.float64, device=src.device)
        scaled, step = cls(src, (top,)), _row_step(src.d, src.device)
        mean = torch.zeros(src.d, dtype=torch.float64, device=src.device)
        for r0, r1 in scaled.blocks(step):
            mean += scaled.block(r0, r1).sum(dim=0)
        mean /= src.n
        rows = cls(src, (top,), mean)
        size = max(float(mean.abs().amax()), 2.0**-1022)  # the rows' own scale, past the divisor
        spread = max(float(rows.block(r0, r1).abs().amax()) for r0, r1 in rows.blocks(step))
        if spread <= 1e3 * 2.0**-52 * size and not constant_ok:  # every row the mean, up to rounding
            raise ValueError(_constant_message(name, src.n))
        return rows

    @classmethod
    def unit_centred(cls, x, name: str = "x") -> Rows:
        """The rows of x minus their mean (see :meth:`centred`), scaled to unit L2 norm;
        refuses a sample equal to the mean (its direction is undefined)."""
        rows = cls.centred(x, name)
        norms = torch.empty(rows.n, dtype=torch.float64, device=rows.device)
        for r0, r1 in rows.blocks(_row_step(rows.d, rows.device)):
            norms[r0:r1] = torch.linalg.vector_norm(rows.block(r0, r1), dim=1)
        zero = torch.nonzero(norms <= 1e3 * 2.0**-52 * float(norms.max())).ravel()
        if len(zero):
            raise ValueError(
                f"row {int(zero[0])} of {name} equals the mean of its rows, so it has no direction "
                "once centred; centre=True needs every sample to differ from the mean"
            )
        return cls(rows.src, rows.divisors, rows.shift, norms)

    @property
    def n(self) -> int:
        return self.src.n

    @property
    def d(self) -> int:
        return self.src.d

    @property
    def device(self) -> torch.device:
        return self.src.device

    def block(self, r0: int, r1: int, device: torch.device | None = None) -> torch.Tensor:
        """Rows r0..r1 as a float64 (r1 - r0, D) tensor on ``device`` (default: x's)."""
        b = self.src.rows(r0, r1).to(torch.float64, copy=True)
        for d in self.divisors:
            b /= d[r0:r1, None] if d.dim() else d
        if self.shift is not None:
            b -= self.shift
        if self.after is not None:
            b /= self.after[r0:r1, None]
        return b if device is None else b.to(device)

    def blocks(self, step: int):
        return ((r0, min(r0 + step, self.n)) for r0 in range(0, self.n, step))


def _constant_message(name: str, n: int) -> str:
    if n < 2:
        return f"CKA compares how samples vary, so it needs at least 2 samples; {name} has N={n}"
    return (
        f"{name} is the same for every sample (constant features), so its centred Gram matrix "
        "is zero and CKA is 0 / 0; drop this layer or check how it was captured"
    )


def _row_step(width: int, device: torch.device, copies: int = 2) -> int:
    """Rows per block so that ``copies`` float64 blocks of ``width`` columns fit the budget."""
    return max(1, _memory.budget(device) // (copies * _F64 * max(1, width)))


def rowdot(a: Rows, b: Rows) -> torch.Tensor:
    """(N,) float64 on a's device: sum_j (a_i . a_j)(b_i . b_j) over all j, i included."""
    if a.n != b.n:
        raise ValueError(f"the two representations must hold the same samples: N={a.n} and N={b.n}")
    n, d1, d2 = a.n, a.d, b.d
    if 4 * d1 * d2 <= 2 * n * (d1 + d2):
        return _rowdot_features(a, b)
    return _rowdot_gram(a, b)


def rowdot_off(a: Rows, b: Rows, against: torch.Tensor | None = None, selves=None) -> torch.Tensor:
    """(N,) float64: sum over j != i of (a_i . a_j)(b_i . b_j), without cancellation.

    :func:`rowdot` less the diagonal term (a_i . a_i)(b_i . b_i) loses every digit when the
    off-diagonal sum is small next to the diagonal (samples nearly orthogonal to all
    others). Its rounding error is at most (N + D1 + D2 + 4) 2^-53 sqrt(rowdot(a, a)_i
    rowdot(b, b)_i); rows where that exceeds 2^-30 times ``against`` (default: the result
    itself, a relative error) are summed again directly over j != i (Gram tiles with the
    diagonal left out): O(flagged N (D1 + D2)). So every row is accurate to 2^-30 relative,
    or of ``against`` (the scale the caller divides by). ``selves``: rowdot(a, a) and
    rowdot(b, b) where the caller has them (dense LSim keeps each layer's for its pairs).
    """
    full = selves[0] if b is a and selves is not None else rowdot(a, b)
    diag_a = row_squares(a)
    diag_b = diag_a if b is a else row_squares(b).to(a.device)
    off = full - diag_a * diag_b
    if b is a:
        scale_a = scale_b = full
    else:
        scale_a, scale_b = selves if selves is not None else (rowdot(a, a), rowdot(b, b))
        scale_b = scale_b.to(a.device)
    bound = (a.n + a.d + b.d + 4) * 2.0**-53 * torch.sqrt(scale_a * scale_b)
    flagged = torch.nonzero(2.0**30 * bound >= (off.abs() if against is None else against)).ravel()
    if len(flagged):
        off[flagged] = _rowdot_off_direct(a, b, flagged)
    return off


def row_squares(a: Rows) -> torch.Tensor:
    """(N,) float64 a_i . a_i, a block of rows at a time."""
    out = torch.empty(a.n, dtype=torch.float64, device=a.device)
    for r0, r1 in a.blocks(_row_step(a.d, a.device)):
        block = a.block(r0, r1)
        out[r0:r1] = (block * block).sum(dim=1)
    return out


def _rowdot_off_direct(a: Rows, b: Rows, rows: torch.Tensor) -> torch.Tensor:
    """sum over j != i of (a_i . a_j)(b_i . b_j) for the rows i listed (sorted), directly."""
    device = a.device
    step = _row_step(a.d + b.d, device, copies=4)
    picked_a, picked_b = [], []
    for r0, r1 in a.blocks(step):  # the listed rows, read a block at a time
        mine = rows[(rows >= r0) & (rows < r1)] - r0
        if len(mine):
            ab, bb = _pair_block(a, b, r0, r1)
            picked_a.append(ab[mine])
            picked_b.append(bb[mine])
    ar, br = torch.cat(picked_a), torch.cat(picked_b)  # (R, D1), (R, D2)
    out = torch.zeros(len(rows), dtype=torch.float64, device=device)
    for c0, c1 in a.blocks(step):
        ac, bc = _pair_block(a, b, c0, c1)
        prod = (ar @ ac.T) * (br @ bc.T)  # (R, c)
        inside = (rows >= c0) & (rows < c1)
        prod[torch.nonzero(inside).ravel(), rows[inside] - c0] = 0.0  # j == i left out
        out += prod.sum(dim=1)
    return out


def total(a: Rows, b: Rows) -> torch.Tensor:
    """float64 scalar sum_ij (a_i . a_j)(b_i . b_j) = |A^T B|_F^2."""
    if a.n != b.n:
        raise ValueError(f"the two representations must hold the same samples: N={a.n} and N={b.n}")
    n, d1, d2 = a.n, a.d, b.d
    if 2 * d1 * d2 <= 2 * n * (d1 + d2):
        out = torch.zeros((), dtype=torch.float64, device=a.device)
        for _, _, cross in _cross_columns(a, b, _RowPairs(a, b, _row_step(a.d + b.d, a.device, copies=3))):
            out += (cross * cross).sum()
        return out
    return _rowdot_gram(a, b).sum()


def _column_step(a: Rows, b: Rows) -> int:
    """Columns of B per pass: a D1 x dc block of A^T B within a quarter of the budget."""
    return max(1, min(b.d, _memory.budget(a.device) // (4 * _F64 * a.d)))


def _pair_block(a: Rows, b: Rows, r0: int, r1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows r0..r1 of a and of b, float64 on a's device (one conversion when b is a)."""
    ab = a.block(r0, r1)
    return ab, ab if b is a else b.block(r0, r1, a.device)


class _RowPairs:
    """The matching row blocks of a and b (float64, on a's device), as often as iterated.

    When all rows fit in one block (the usual case), the pair is converted once and kept for
    the passes of one call; otherwise blocks are converted again on each pass.
    """

    def __init__(self, a: Rows, b: Rows, step: int):
        self.a, self.b, self.step = a, b, step
        self.kept = list(self._convert()) if step >= a.n else None

    def _convert(self):
        for r0, r1 in self.a.blocks(self.step):
            yield r0, r1, *_pair_block(self.a, self.b, r0, r1)

    def __iter__(self):
        return iter(self.kept) if self.kept is not None else self._convert()


def _cross_columns(a: Rows, b: Rows, pairs: _RowPairs):
    """Yield (c0, c1, A^T B[:, c0:c1]) a column block of B at a time, each (D1, dc) float64."""
    dc = _column_step(a, b)
    for c0 in range(0, b.d, dc):
        c1 = min(c0 + dc, b.d)
        cross = torch.zeros((a.d, c1 - c0), dtype=torch.float64, device=a.device)  # (D1, dc)
        for _, _, ab, bb in pairs:
            cross += ab.T @ bb[:, c0:c1]
        yield c0, c1, cross


def _rowdot_features(a: Rows, b: Rows) -> torch.Tensor:
    out = torch.zeros(a.n, dtype=torch.float64, device=a.device)
    pairs = _RowPairs(a, b, _row_step(a.d + b.d, a.device, copies=3))
    for c0, c1, cross in _cross_columns(a, b, pairs):
        for r0, r1, ab, bb in pairs:
            out[r0:r1] += ((ab @ cross) * bb[:, c0:c1]).sum(dim=1)
    return out


def _rowdot_gram(a: Rows, b: Rows) -> torch.Tensor:
    device = a.device
    width = a.d + b.d
    room = _memory.budget(device) // _F64
    # two t x t tiles and four t-row blocks: 2 t^2 + 4 t width <= room
    t = max(1, int((-2 * width + math.sqrt(4 * width * width + 2 * room)) / 2))
    out = torch.zeros(a.n, dtype=torch.float64, device=device)
    for r0, r1, ar, br in _RowPairs(a, b, t):
        for c0, c1 in a.blocks(t):
            ac, bc = (ar, br) if c0 == r0 else _pair_block(a, b, c0, c1)
            out[r0:r1] += ((ar @ ac.T) * (br @ bc.T)).sum(dim=1)  # (t, t) tiles of K and L
    return out


def grid(a: list[Rows], b: list[Rows] | None = None, *, kind: str = "gram", names=None) -> tuple:
    """Every layer of ``a`` against every layer of ``b`` (default: ``a``) at once.

    Each layer's N x N matrix M = R R^T of its rows R is taken a block of rows at a time, for
    all layers together, and flattened; one product of the stacked blocks then adds
    sum_ij M_l[i, j] M'_m[i, j] for every pair (l, m). ``kind``: "gram" M = R R^T as it is
    (CKA of centred rows); "adjacency" the dense graph of LSim: diagonal zero, each row
    divided by its norm (the pair's sum is then N LSim); "ucentred" the U-centred K~ (K with
    a zero diagonal, then K~_ij - r_i / (N-2) - r_j / (N-2) + t / ((N-1)(N-2)) off the
    diagonal, with r the row sums and t the total of K~): the pair's sum is then N (N-3)
    times the unbiased HSIC of Song et al. (2012). FLOPs: 2 N^2 D per layer plus 2 N^2 a pair, against a pair's
    min(4 N D1 D2, 2 N^2 (D1 + D2)) one pair at a time: the cheaper way for a grid of many
    wide layers. Memory: one block of rows of every layer's M within the budget, and one
    row block and one column block of a layer's rows at a time (a layer is never read whole).

    Returns (sums (La, Lb), |M_l|_F^2 of a's layers, of b's layers), float64 on the first
    layer's device. ``names``: a's and b's layer names, for the error a zero adjacency row
    raises.
    """
    layers = a if b is None else a + b
    n, device = a[0].n, a[0].device
    budget = _memory.budget(device)
    # a row block of every layer's M (and two more), and of a layer's rows, within the budget
    step = max(1, min(n, budget // (_F64 * (n * (len(layers) + 2) + 2 * max(r.d for r in layers)))))
    sums = torch.zeros(len(a), len(layers) - len(a) if b is not None else len(a), dtype=torch.float64, device=device)
    squares = torch.zeros(len(layers), dtype=torch.float64, device=device)
    row_sums = [k_tilde_row_sums(rows, device) for rows in layers] if kind == "ucentred" else []
    for r0, r1 in a[0].blocks(step):
        flat = torch.empty(len(layers), (r1 - r0) * n, dtype=torch.float64, device=device)
        own = (torch.arange(r1 - r0, device=device), torch.arange(r0, r1, device=device))  # the diagonal
        for m, rows in enumerate(layers):
            s = flat[m].view(r1 - r0, n)  # (r1 - r0, N): this row block of the layer's M
            mine = rows.block(r0, r1, device)  # (r1 - r0, D), the one row block a layer holds
            for c0, c1 in rows.blocks(_row_step(rows.d, device, copies=4)):  # columns read a block at a time
                s[:, c0:c1] = mine @ rows.block(c0, c1, device).T
            if kind == "adjacency":
                s[own] = 0.0
                norm = torch.linalg.vector_norm(s, dim=1)
                if bool((norm == 0).any()):
                    layer = f" of layer {names[m]!r}" if names is not None else ""
                    raise ValueError(
                        f"a node's adjacency row is zero in the dense graph{layer} (all other samples orthogonal to it)"
                    )
                s /= norm[:, None]
            elif kind == "ucentred":
                r = row_sums[m]  # (N,) row sums of K~
                s -= (r[r0:r1, None] + r[None, :]) / (n - 2)
                s += r.sum() / ((n - 1) * (n - 2))
                s[own] = 0.0  # K~ and its U-centring are zero on the diagonal
        squares += (flat * flat).sum(dim=1)
        sums += flat[: len(a)] @ (flat[len(a) :] if b is not None else flat[: len(a)]).T
    return sums, squares[: len(a)], squares[len(a) :] if b is not None else squares


def k_tilde_row_sums(rows: Rows, device) -> torch.Tensor:
    """(N,) row sums of K~ = R R^T less its diagonal, a block of rows at a time: O(N D)."""
    step = _row_step(rows.d, device)
    total = torch.zeros(rows.d, dtype=torch.float64, device=device)
    for r0, r1 in rows.blocks(step):
        total += rows.block(r0, r1, device).sum(dim=0)
    out = torch.empty(rows.n, dtype=torch.float64, device=device)
    for r0, r1 in rows.blocks(step):
        block = rows.block(r0, r1, device)
        out[r0:r1] = block @ total - (block * block).sum(dim=1)
    return out


def grid_pays(a: list[Rows], b: list[Rows] | None = None) -> bool:
    """Whether :func:`grid` costs fewer FLOPs than the pairs one at a time (each in the cheaper
    of :func:`rowdot`'s forms), with every layer on one device."""
    other = a if b is None else b
    if len({r.device for r in (*a, *other)}) > 1:
        return False
    n = a[0].n
    pairs = sum(min(4 * n * x.d * y.d, 2 * n * n * (x.d + y.d)) for x in a for y in other)
    if b is None:
        pairs //= 2  # a symmetric grid computes each pair once
    layers = a if b is None else a + b
    return 2 * n * n * (sum(r.d for r in layers) + len(a) * len(other)) < pairs
