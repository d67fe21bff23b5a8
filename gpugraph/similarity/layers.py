"""Similarity between representations of the same samples, through their graphs.

Graph-based similarity (Chen et al., 2024) compares the cosine graphs two representations
induce over the same N samples; linear CKA, kNN overlap and mutual-kNN alignment are the
baselines users compare it with, in the same API.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gpugraph._util.types import ArrayLike, RowSource
from gpugraph.graph.knngraph import KnnGraph, check_graph
from gpugraph.knn.build import knn_graph
from gpugraph.knn.sources import Source, as_source
from gpugraph.similarity import gram as _gram

_MEASURES = ("lsim", "cka", "knn_overlap", "mutual_knn")


def layer_similarity(x1: RowSource, x2: RowSource, k: int | None = None, centre: bool = False) -> float:
    """GBS layer similarity LSim between two representations of the same N samples.

    LSim(A1, A2) = (1/N) sum_i cos(A1[i, :], A2[i, :]), the mean over nodes of the cosine
    between a node's adjacency rows in the two graphs. With ``k=None`` the graphs are the
    dense cosine graphs of the paper: A[i, j] = cos(x_i, x_j) for j != i, A[i, i] = 0. With
    an integer k they are the kNN graphs in "mean" mode, (W + W^T)/2. ``centre=True`` (dense
    graphs only) subtracts each representation's mean sample first, as CKA does: the cosine
    graph of features that share a large common component (post-ReLU or pre-BN outputs) is
    close to all-ones, and centring exposes how the samples differ (see "Layer
    identification" in benchmarks/RESULTS.md for when that matters).

    Dense graphs are never formed. With unit rows U1 (N, D1), U2 (N, D2) and S = U U^T::

        <A1[i], A2[i]> = sum_j S1[i, j] S2[i, j] - 1,   |A[i]|^2 = sum_j S[i, j]^2 - 1,

    summed either through the D1 x D2 matrix U1^T U2 (O(N D1 D2)) or through row tiles of
    S1 and S2 (O(N^2 (D1 + D2))), whichever costs fewer FLOPs, in float64 and in blocks
    sized by the memory budget (see gpugraph.similarity.gram). The diagonal term is subtracted, and
    rows where that cancels (samples nearly orthogonal to all others) are summed again
    over j != i directly, so every node's cosine is accurate to 2^-30 or better. Rows are
    scaled by their largest entry before their norm is taken, so very large or very small
    rows are handled exactly.

    Parameters
    ----------
    x1 : (N, D1) floating-point tensor or array
    x2 : (N, D2) floating-point tensor or array, the same N samples in the same order
    k : int or None

    Returns
    -------
    float in [-1, 1]; 1 for x1 == x2. Invariant to orthogonal transforms and isotropic
    scaling of either representation.

    Raises
    ------
    ValueError
        If the inputs are not (N, D) matrices of the same N >= 3, hold NaN, Inf or all-zero
        rows, or a node's adjacency row is zero in one graph.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    >>> round(gg.layer_similarity(x, 3 * x), 6)
    1.0

    References
    ----------
    Z. Chen et al., "Graph-Based Similarity of Deep Neural Networks", Neurocomputing 614
    (2024), doi:10.1016/j.neucom.2024.128722.
    """
    t1, t2 = _pair(x1, x2)
    _check_centre(centre, "lsim", k)
    if k is not None:
        return _sparse_lsim(_SparseFactor(_graph_of(t1, k, "x1")), _SparseFactor(_graph_of(t2, k, "x2")))
    unit = _gram.Rows.unit_centred if centre else _gram.Rows.unit
    return _dense_lsim(_Factor(unit(t1, "x1")), _Factor(unit(t2, "x2")))


def _check_centre(centre: bool, measure: str, k: int | None) -> None:
    if centre and (measure != "lsim" or k is not None):
        raise ValueError(
            "centre=True applies to dense LSim (measure='lsim', k=None): CKA centres by "
            "definition, and a kNN graph of centred features needs the centred features "
            "themselves (centre them yourself for that)"
        )


class _Factor:
    """Per-layer work reused across a grid: the unit rows (scaled on the fly, no copy) and
    the squared norms |A[i]|^2 of the dense graph's rows."""

    def __init__(self, rows: _gram.Rows):
        self.rows = rows
        self.full = _gram.rowdot(rows, rows)  # (N,) sum_j S_ij^2, the diagonal included
        self.row_sq = _gram.rowdot_off(rows, rows, selves=(self.full, self.full))  # (N,) |A[i]|^2, j != i


def _dense_lsim(f1: _Factor, f2: _Factor) -> float:
    denom = torch.sqrt(f1.row_sq * f2.row_sq.to(f1.row_sq.device))  # (N,) on f1's device
    if not bool((denom > 0).all()):
        raise ValueError(_ZERO_ROW)
    cross = _gram.rowdot_off(f1.rows, f2.rows, against=denom, selves=(f1.full, f2.full))  # to 2^-30 of denom
    return float((cross / denom).mean())


_ZERO_ROW = (
    "a node's adjacency row is zero in one graph (the sample is orthogonal to every other "
    "sample), so its cosine with the other graph's row is undefined"
)


class _SparseFactor:
    """Per-layer work reused across a grid: the "mean"-mode adjacency (SciPy CSR, float64)
    and the norms of its rows."""

    def __init__(self, g: KnnGraph):
        self.a = g.to_scipy("mean").astype(np.float64)
        self.norm = np.sqrt(np.asarray(self.a.multiply(self.a).sum(axis=1)).ravel())


def _sparse_lsim(f1: _SparseFactor, f2: _SparseFactor) -> float:
    dot = np.asarray(f1.a.multiply(f2.a).sum(axis=1)).ravel()
    denom = f1.norm * f2.norm
    if not (denom > 0).all():
        row = int(np.argmin(denom > 0))
        raise ValueError(
            f"node {row}'s row of the kNN adjacency is zero in one graph (its neighbours are "
            "all at similarity 0), so its cosine with the other graph's row is undefined; "
            "use a larger k or the dense graphs (k=None)"
        )
    return float(np.mean(dot / denom))


def _pair(x1, x2, least: int = 3) -> tuple[Source, Source]:
    t1, t2 = as_source(x1, "x1"), as_source(x2, "x2")
    if t1.n != t2.n:
        raise ValueError(f"x1 and x2 must hold the same samples: x1 has N={t1.n}, x2 has N={t2.n}")
    if t1.n < least:
        raise ValueError(f"need at least {least} samples to compare representations, got N={t1.n}")
    return t1, t2


def cka(x1: RowSource, x2: RowSource, unbiased: bool = False) -> float:
    """Linear centred kernel alignment between two representations of the same samples.

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X1 X1^T and L = X2 X2^T
    (Kornblith et al., 2019). The default is the plug-in estimator on centred columns,
    ``|X2c^T X1c|_F^2 / (|X1c^T X1c|_F |X2c^T X2c|_F)``; ``unbiased=True`` uses the unbiased
    HSIC estimator of Song et al. (2012), the form Nguyen et al. (2021) average over
    minibatches (see :class:`MinibatchCKA`).

    Notes
    -----
    The sums are taken in float64 through D1 x D2 blocks of X1^T X2 or through N x N tiles
    of K and L, whichever costs fewer FLOPs, in blocks sized by the memory budget: no
    D x D or N x N matrix is held whole (see gpugraph.similarity.gram).

    Raises
    ------
    ValueError
        If a representation is constant across samples (CKA is 0 / 0), N < 2 (N < 4 for
        the unbiased estimator), or the unbiased HSIC of a representation with itself is
        not positive (too few samples for the estimator).

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    >>> round(gg.cka(x, 2 * x + 1), 6)
    1.0

    References
    ----------
    S. Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
    L. Song et al., "Feature Selection via Dependence Maximization", JMLR 13 (2012).
    T. Nguyen et al., "Do Wide and Deep Networks Learn the Same Things?", ICLR 2021.
    """
    t1, t2 = _pair(x1, x2, least=4 if unbiased else 2)
    if unbiased:
        return _cka_ratio(*_unbiased_hsic(t1, t2)[0])
    a, b = _gram.Rows.centred(t1, t1.name), _gram.Rows.centred(t2, t2.name)
    return _cka_ratio(_gram.total(a, b), _gram.total(a, a), _gram.total(b, b))


def _cka_ratio(kl, kk, ll) -> float:
    kl, kk, ll = float(kl), float(kk), float(ll)
    if not (kk > 0 and ll > 0):
        raise ValueError(
            f"the HSIC of a representation with itself is {min(kk, ll):.3g}, not positive: "
            "the unbiased estimator needs more samples (or the representation is constant)"
        )
    return kl / math.sqrt(kk * ll)


class _HsicSide:
    """One representation's share of the unbiased HSIC (Song et al., 2012, eq. 5): with
    K~ = K - diag(K), the diagonal of K, K~ 1 and 1^T K~ 1, all O(N D).

    The estimator does not change when a constant is added to a feature, so the columns
    are centred first, in float64: a large common offset (post-ReLU features) then costs no
    digits. The rows are divided by ``scale`` (default: the largest |entry|) so that no
    square overflows; HSIC values then carry a factor 1 / scale^2 per side, which a ratio
    of HSICs taken in one scale does not see. A constant representation is refused unless
    ``constant_ok`` (a minibatch, whose HSIC terms are then 0).
    """

    def __init__(self, x, name: str, scale: float | None = None, constant_ok: bool = False):
        src = as_source(x, name)
        self.rows = _gram.Rows.centred(src, name, scale, constant_ok)
        self.scale = float(self.rows.divisors[0])  # the one given, or this side's largest |entry|
        self.diag = _gram.row_squares(self.rows)  # (N,) K_ii
        self.k1 = _gram.k_tilde_row_sums(self.rows, src.device)  # (N,) K~ 1
        self.sum = self.k1.sum()  # 1^T K~ 1

    def hsic(self, other: _HsicSide) -> torch.Tensor:
        n = len(self.diag)
        trace = _gram.total(self.rows, other.rows) - (self.diag * other.diag.to(self.diag.device)).sum()
        term = trace + self.sum * other.sum.to(self.sum.device) / ((n - 1) * (n - 2))
        term = term - 2.0 / (n - 2) * (self.k1 @ other.k1.to(self.k1.device))
        return term / (n * (n - 3))


def _unbiased_hsic(x1: Source, x2: Source, scales=(None, None), constant_ok: bool = False):
    """Unbiased HSIC of (K, L), (K, K) and (L, L) of rows divided by ``scales`` (default:
    each side's largest |entry|), and the scales used; needs N >= 4."""
    if len(x1) < 4:
        raise ValueError(f"the unbiased CKA estimator needs at least 4 samples, got {len(x1)}")
    s1, s2 = _HsicSide(x1, "x1", scales[0], constant_ok), _HsicSide(x2, "x2", scales[1], constant_ok)
    return (s1.hsic(s2), s1.hsic(s1), s2.hsic(s2)), (s1.scale, s2.scale)


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen et al., 2021).

    Averages the unbiased HSIC estimates of each minibatch (the same estimator as
    ``cka(unbiased=True)``), then forms the ratio, so that representations of many samples
    are compared without holding them at once.

    >>> import torch, gpugraph as gg
    >>> x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    >>> acc = gg.MinibatchCKA()
    >>> for b in x.split(100): acc.update(b, -b)
    >>> round(acc.compute(), 6)
    1.0
    """

    def __init__(self):
        self._sums = torch.zeros(3, dtype=torch.float64)
        self._scales = (None, None)  # fixed by the first batch: every batch in one scale
        self.batches = 0

    def update(self, x1: ArrayLike, x2: ArrayLike) -> None:
        t1, t2 = _pair(x1, x2, least=4)
        values, self._scales = _unbiased_hsic(t1, t2, self._scales, constant_ok=True)
        self._sums += torch.stack([v.cpu() for v in values])
        self.batches += 1

    def compute(self) -> float:
        if not self.batches:
            raise ValueError("no minibatch seen: call update(x1, x2) first")
        return _cka_ratio(*self._sums)


def knn_overlap(a: KnnGraph | RowSource, b: KnnGraph | RowSource, k: int | None = None) -> float:
    """Mean Jaccard overlap of the neighbour sets of two kNN graphs on the same N nodes.

    ``overlap = (1/N) sum_i |N1(i) & N2(i)| / |N1(i) | N2(i)|``, in [0, 1]; 1 when every node
    has the same neighbours in both. ``a`` and ``b`` are KnnGraphs (their k may differ) or
    (N, D) representations, whose exact cosine k-NN graphs are built with ``k``
    (default 10, or the k of the other argument when it is a graph).

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g1 = gg.KnnGraph(torch.tensor([[1, 2], [0, 2], [0, 1]]), torch.ones(3, 2))
    >>> g2 = gg.KnnGraph(torch.tensor([[1], [0], [0]]), torch.ones(3, 1))
    >>> gg.knn_overlap(g1, g2)
    0.5
    """
    g1, g2 = _graphs(a, b, k, "knn_overlap")
    shared = _shared_neighbours(g1, g2).double()
    return float((shared / (g1.k + g2.k - shared)).mean())


def mutual_knn(a: KnnGraph | RowSource, b: KnnGraph | RowSource, k: int | None = None) -> float:
    """Mutual k-NN alignment (Huh et al., 2024): mean over nodes of ``|N1(i) & N2(i)| / k``.

    ``a`` and ``b`` are (N, D) representations, whose exact cosine k-NN graphs are built
    with ``k`` (default 10), or KnnGraphs of one k.

    >>> import torch, gpugraph as gg
    >>> x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    >>> gg.mutual_knn(x, 5 * x, k=3)
    1.0
    """
    g1, g2 = _graphs(a, b, k, "mutual_knn")
    if g1.k != g2.k:
        raise ValueError(f"mutual_knn compares neighbour lists of one k; got graphs with k={g1.k} and k={g2.k}")
    return float(_shared_neighbours(g1, g2).double().mean() / g1.k)


def _graphs(a, b, k: int | None, who: str) -> tuple[KnnGraph, KnnGraph]:
    """Two kNN graphs from graphs or (N, D) representations, the latter built with k."""
    if isinstance(a, KnnGraph) and isinstance(b, KnnGraph):
        if k is not None and (a.k != k or b.k != k):
            raise ValueError(
                f"{who}: k={k} was passed, but both arguments are graphs already (k={a.k} and k={b.k}); leave k out"
            )
        return a, b
    for x, name in ((a, "a"), (b, "b")):
        if isinstance(x, (str, bytes)) and not str(x).endswith(".npy"):
            raise TypeError(
                f"{who}: {name} must be a KnnGraph, an (N, D) tensor or array, or an .npy path, "
                f"got {type(x).__name__} {x!r}"
            )
    k = k if k is not None else next((x.k for x in (a, b) if isinstance(x, KnnGraph)), 10)
    items = [x if isinstance(x, KnnGraph) else as_source(x, name) for x, name in ((a, "a"), (b, "b"))]
    n = [x.n for x in items]
    if n[0] != n[1]:
        raise ValueError(f"{who} compares the same samples: a has N={n[0]}, b has N={n[1]}")
    g1, g2 = (x if isinstance(x, KnnGraph) else _graph_of(x, k, name) for x, name in zip(items, "ab", strict=True))
    return g1, g2


def _graph_of(x, k: int, name: str) -> KnnGraph:
    """knn_graph(x, k), with bad rows reported under ``name`` (a layer's), not as "x"."""
    return knn_graph(as_source(x, name), k)


def _shared_neighbours(g1: KnnGraph, g2: KnnGraph) -> torch.Tensor:
    """(N,) count of neighbours common to each node's lists in g1 and g2."""
    check_graph(g1, "g1")
    check_graph(g2, "g2")
    if g1.n != g2.n:
        raise ValueError(f"the graphs must be over the same nodes: g1 has N={g1.n}, g2 has N={g2.n}")
    b = g2.indices.to(g1.device)
    shared = torch.zeros(g1.n, dtype=torch.int64, device=g1.device)
    step = max(1, (1 << 22) // (g1.k * g2.k))
    for r0 in range(0, g1.n, step):
        a = g1.indices[r0 : r0 + step]  # (c, k1)
        shared[r0 : r0 + step] = (a[:, :, None] == b[r0 : r0 + step, None, :]).sum(dim=(1, 2))
    return shared
