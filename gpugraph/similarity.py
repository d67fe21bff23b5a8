"""Similarity between representations of the same samples, through their graphs.

Graph-based similarity (Chen et al., 2024) compares the cosine graphs two representations
induce over the same N samples; linear CKA, kNN overlap and mutual-kNN alignment are the
baselines users compare it with, in the same API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch

from gpugraph._tensor import as_features, unit_rows
from gpugraph.knn import KnnGraph, knn_graph

_MEASURES = ("lsim", "cka", "knn_overlap", "mutual_knn")


def layer_similarity(x1, x2, k: int | None = None) -> float:
    """GBS layer similarity LSim between two representations of the same N samples.

    LSim(A1, A2) = (1/N) sum_i cos(A1[i, :], A2[i, :]), the mean over nodes of the cosine
    between a node's adjacency rows in the two graphs. With ``k=None`` the graphs are the
    dense cosine graphs of the paper: A[i, j] = cos(x_i, x_j) for j != i, A[i, i] = 0. With
    an integer k they are the kNN graphs in "mean" mode, (W + W^T)/2.

    Dense graphs are never formed. With unit rows U1 (N, D1), U2 (N, D2) and S = U U^T,
        <A1[i], A2[i]> = u1_i^T (U1^T U2) u2_i - 1,   |A[i]|^2 = u_i^T (U^T U) u_i - 1,
    which costs O(N D1 D2) with D1 x D2 Gram factors; when D1 D2 exceeds N (wide layers,
    few samples) the same row sums are taken over row tiles of S1 and S2 instead, O(N^2 D).

    Parameters
    ----------
    x1 : (N, D1) floating-point tensor or array
    x2 : (N, D2) floating-point tensor or array, the same N samples in the same order
    k : int or None

    Returns
    -------
    float in [-1, 1]; 1 for x1 == x2. Invariant to orthogonal transforms and isotropic
    scaling of either representation.

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
    u1, u2 = _pair(x1, x2)
    if k is not None:
        return _sparse_lsim(_SparseFactor(knn_graph(x1, k)), _SparseFactor(knn_graph(x2, k)))
    return _dense_lsim(_Factor(u1), _Factor(u2))


class _Factor:
    """Per-layer work reused across a grid: unit rows (float64) and |A[i]|^2."""

    def __init__(self, u: torch.Tensor):
        self.u = u.to(torch.float64)
        n, d = self.u.shape
        if d * d <= n * n:
            self.row_sq = ((self.u @ (self.u.T @ self.u)) * self.u).sum(1) - 1.0  # (N,)
        else:
            self.row_sq = _tiled_rowdot(self.u, self.u)

    @property
    def n(self) -> int:
        return self.u.shape[0]


def _dense_lsim(f1: _Factor, f2: _Factor) -> float:
    n, d1 = f1.u.shape
    d2 = f2.u.shape[1]
    if d1 * d2 <= n * (d1 + d2):  # feature form O(N D1 D2) against tiles O(N^2 (D1 + D2))
        cross = ((f1.u @ (f1.u.T @ f2.u)) * f2.u).sum(1) - 1.0  # (N,)
    else:
        cross = _tiled_rowdot(f1.u, f2.u)
    denom = torch.sqrt(f1.row_sq * f2.row_sq)
    if bool((denom == 0).any()):
        raise ValueError("a node's adjacency row is zero in one graph (all other samples orthogonal)")
    return float((cross / denom).mean())


def _tiled_rowdot(u1: torch.Tensor, u2: torch.Tensor, tile: int = 2048) -> torch.Tensor:
    """sum_j S1[i, j] S2[i, j] over j != i, by row tiles of S1 = U1 U1^T and S2 = U2 U2^T."""
    out = torch.empty(len(u1), dtype=u1.dtype, device=u1.device)
    for r0 in range(0, len(u1), tile):
        s1 = u1[r0 : r0 + tile] @ u1.T  # (t, N)
        s2 = u2[r0 : r0 + tile] @ u2.T  # (t, N)
        out[r0 : r0 + tile] = (s1 * s2).sum(1) - 1.0  # the diagonal term is 1 * 1
    return out


class _SparseFactor:
    """Per-layer work reused across a grid: the "mean"-mode adjacency (SciPy CSR, float64)
    and the norms of its rows."""

    def __init__(self, g: KnnGraph):
        self.a = g.to_scipy("mean").astype(np.float64)
        self.norm = np.sqrt(np.asarray(self.a.multiply(self.a).sum(axis=1)).ravel())


def _sparse_lsim(f1: _SparseFactor, f2: _SparseFactor) -> float:
    dot = np.asarray(f1.a.multiply(f2.a).sum(axis=1)).ravel()
    return float(np.mean(dot / (f1.norm * f2.norm)))


def _pair(x1, x2) -> tuple[torch.Tensor, torch.Tensor]:
    t1, t2 = as_features(x1, "x1"), as_features(x2, "x2")
    if len(t1) != len(t2):
        raise ValueError(
            f"x1 and x2 must hold the same samples: x1 has N={len(t1)}, x2 has N={len(t2)}"
        )
    if len(t1) < 3:
        raise ValueError(f"need at least 3 samples to compare graphs, got N={len(t1)}")
    return unit_rows(t1, "x1"), unit_rows(t2, "x2").to(t1.device)


def cka(x1, x2, unbiased: bool = False) -> float:
    """Linear centred kernel alignment between two representations of the same samples.

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X1 X1^T and L = X2 X2^T, in
    the feature-space form |X2c^T X1c|_F^2 / (|X1c^T X1c|_F |X2c^T X2c|_F) of centred
    columns (Kornblith et al., 2019). ``unbiased=True`` uses the unbiased HSIC estimator
    of Song et al. (2012), the form Nguyen et al. (2021) average over minibatches; see
    :class:`MinibatchCKA` for streaming.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    >>> round(gg.cka(x, 2 * x + 1), 6)
    1.0
    """
    t1, t2 = as_features(x1, "x1").double(), as_features(x2, "x2").double().to(as_features(x1).device)
    if len(t1) != len(t2):
        raise ValueError(f"x1 and x2 must hold the same samples: N={len(t1)} and N={len(t2)}")
    if unbiased:
        k, l_ = t1 @ t1.T, t2 @ t2.T
        return float(_hsic1(k, l_) / torch.sqrt(_hsic1(k, k) * _hsic1(l_, l_)))
    c1, c2 = t1 - t1.mean(0), t2 - t2.mean(0)
    cross = torch.linalg.matrix_norm(c2.T @ c1) ** 2
    return float(cross / (torch.linalg.matrix_norm(c1.T @ c1) * torch.linalg.matrix_norm(c2.T @ c2)))


def _hsic1(k: torch.Tensor, l_: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al., 2012) of two (n, n) Gram matrices, n > 3."""
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased CKA estimator needs at least 4 samples, got {n}")
    k = k - torch.diag(torch.diag(k))
    l_ = l_ - torch.diag(torch.diag(l_))
    ones = torch.ones(n, dtype=k.dtype, device=k.device)
    term = (k * l_).sum() + (ones @ k @ ones) * (ones @ l_ @ ones) / ((n - 1) * (n - 2))
    term = term - 2.0 / (n - 2) * (ones @ k @ (l_ @ ones))
    return term / (n * (n - 3))


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen et al., 2021).

    Averages the unbiased HSIC estimates of each minibatch, then forms the ratio, so that
    representations of many samples are compared without holding them at once.

    >>> import torch, gpugraph as gg
    >>> x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0))
    >>> acc = gg.MinibatchCKA()
    >>> for b in x.split(100): acc.update(b, -b)
    >>> round(acc.compute(), 6)
    1.0
    """

    def __init__(self):
        self._sums = torch.zeros(3, dtype=torch.float64)
        self.batches = 0

    def update(self, x1, x2) -> None:
        t1, t2 = as_features(x1, "x1").double(), as_features(x2, "x2").double()
        if len(t1) != len(t2):
            raise ValueError(f"a minibatch must pair the same samples: N={len(t1)} and N={len(t2)}")
        k, l_ = t1 @ t1.T, t2.to(t1.device) @ t2.to(t1.device).T
        self._sums += torch.stack([_hsic1(k, l_), _hsic1(k, k), _hsic1(l_, l_)]).cpu()
        self.batches += 1

    def compute(self) -> float:
        if not self.batches:
            raise ValueError("no minibatch seen: call update(x1, x2) first")
        kl, kk, ll = self._sums
        return float(kl / torch.sqrt(kk * ll))


def knn_overlap(g1: KnnGraph, g2: KnnGraph) -> float:
    """Mean Jaccard overlap of the neighbour sets of two kNN graphs on the same N nodes.

    overlap = (1/N) sum_i |N1(i) & N2(i)| / |N1(i) | N2(i)|, in [0, 1]; 1 when every node
    has the same neighbours in both. The graphs may have different k.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g1 = gg.KnnGraph(torch.tensor([[1, 2], [0, 2], [0, 1]]), torch.ones(3, 2))
    >>> g2 = gg.KnnGraph(torch.tensor([[1], [0], [0]]), torch.ones(3, 1))
    >>> gg.knn_overlap(g1, g2)
    0.5
    """
    shared = _shared_neighbours(g1, g2).double()
    return float((shared / (g1.k + g2.k - shared)).mean())


def mutual_knn(x1, x2, k: int = 10) -> float:
    """Mutual k-NN alignment (Huh et al., 2024): mean over nodes of |N1(i) & N2(i)| / k.

    The neighbour sets are the exact cosine k-NN of each representation.

    >>> import torch, gpugraph as gg
    >>> x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    >>> gg.mutual_knn(x, 5 * x, k=3)
    1.0
    """
    _pair(x1, x2)
    g1, g2 = knn_graph(x1, k), knn_graph(x2, k)
    return float(_shared_neighbours(g1, g2).double().mean() / k)


def _shared_neighbours(g1: KnnGraph, g2: KnnGraph) -> torch.Tensor:
    """(N,) count of neighbours common to each node's lists in g1 and g2."""
    for name, g in (("g1", g1), ("g2", g2)):
        if not isinstance(g, KnnGraph):
            raise TypeError(f"{name} must be a KnnGraph, got {type(g).__name__}")
    if g1.n != g2.n:
        raise ValueError(
            f"the graphs must be over the same nodes: g1 has N={g1.n}, g2 has N={g2.n}"
        )
    b = g2.indices.to(g1.device)
    shared = torch.zeros(g1.n, dtype=torch.int64, device=g1.device)
    step = max(1, (1 << 22) // (g1.k * g2.k))
    for r0 in range(0, g1.n, step):
        a = g1.indices[r0 : r0 + step]  # (c, k1)
        shared[r0 : r0 + step] = (a[:, :, None] == b[r0 : r0 + step, None, :]).sum(dim=(1, 2))
    return shared


class SimilarityMatrix:
    """Pairwise similarities between the layers of two captured models (or one with itself).

    Attributes: ``values`` (L1, L2) float64 array, ``layers_a``, ``layers_b``, ``measure``.
    """

    def __init__(self, values, layers_a, layers_b, measure: str, params: dict | None = None):
        self.values = np.asarray(values, dtype=np.float64)
        self.layers_a, self.layers_b = list(layers_a), list(layers_b)
        self.measure = measure
        self.params = dict(params or {})

    def identify(self) -> list[str]:
        """For each layer of a, the most similar layer of b (ties: the first)."""
        return [self.layers_b[j] for j in self.values.argmax(axis=1)]

    def to_json(self, path=None) -> str:
        text = json.dumps({"measure": self.measure, "layers_a": self.layers_a, "layers_b": self.layers_b,
                           "values": self.values.tolist(), "params": self.params}, indent=2)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def plot(self, path, title: str | None = None):
        """Write a heatmap PNG of the matrix, layers of a down, layers of b across."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        la, lb = len(self.layers_a), len(self.layers_b)
        fig, ax = plt.subplots(figsize=(max(4, 0.4 * lb + 2.5), max(3.5, 0.4 * la + 1.5)))
        im = ax.imshow(self.values, cmap="viridis", origin="upper")
        ax.set_xticks(range(lb), self.layers_b, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(la), self.layers_a, fontsize=8)
        ax.set_title(title or self.measure)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def __repr__(self) -> str:
        return f"SimilarityMatrix({self.measure}, {self.values.shape[0]} x {self.values.shape[1]} layers)"


def similarity_matrix(acts_a: Mapping, acts_b: Mapping | None = None, measure: str = "lsim",
                      k: int | None = None) -> SimilarityMatrix:
    """Similarity of every layer of ``acts_a`` with every layer of ``acts_b`` (default: itself).

    ``measure``: "lsim" (GBS layer similarity; ``k`` None for dense graphs or an int for
    kNN graphs), "cka" (linear CKA), "knn_overlap" and "mutual_knn" (``k`` defaults to 10).
    Per-layer work (unit rows, Gram factors, kNN graphs) is done once per layer and reused
    across the grid.
    """
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {_MEASURES}, got {measure!r}")
    same = acts_b is None
    acts_b = acts_a if same else acts_b
    for name, acts in (("acts_a", acts_a), ("acts_b", acts_b)):
        if not isinstance(acts, Mapping) or not acts:
            raise TypeError(f"{name} must be a non-empty mapping layer name -> (N, D) tensor (see capture)")
    na = len(next(iter(acts_a.values())))
    nb = len(next(iter(acts_b.values())))
    if na != nb:
        raise ValueError(f"both activation sets must hold the same samples: N={na} and N={nb}")
    prep = _preparer(measure, k)
    fa = {name: prep(x, name) for name, x in acts_a.items()}
    fb = fa if same else {name: prep(x, name) for name, x in acts_b.items()}
    pair = _pair_measure(measure, k)
    a_list, b_list = list(fa.values()), list(fb.values())
    values = np.empty((len(a_list), len(b_list)))
    for i, f in enumerate(a_list):
        # every measure is symmetric: a grid of one set with itself fills its lower half by mirroring
        for j in range(i if same else 0, len(b_list)):
            values[i, j] = pair(f, b_list[j])
            if same:
                values[j, i] = values[i, j]
    return SimilarityMatrix(values, list(fa), list(fb), measure, {"k": k})


def _preparer(measure: str, k: int | None):
    if measure == "lsim" and k is None:
        return lambda x, name: _Factor(unit_rows(as_features(x, f"layer {name!r}"), f"layer {name!r}"))
    if measure == "cka":
        return lambda x, name: _CkaFactor(as_features(x, f"layer {name!r}"))
    kk = k if k is not None else 10
    if measure == "lsim":
        return lambda x, name: _SparseFactor(knn_graph(x, kk))
    return lambda x, name: knn_graph(x, kk)


def _pair_measure(measure: str, k: int | None):
    if measure == "lsim":
        return _dense_lsim if k is None else _sparse_lsim
    if measure == "cka":
        return _CkaFactor.cka
    if measure == "knn_overlap":
        return knn_overlap
    kk = k if k is not None else 10
    return lambda g1, g2: float(_shared_neighbours(g1, g2).double().mean() / kk)


class _CkaFactor:
    """Centred columns and |C^T C|_F of one layer, by the cheaper of D x D or N x N."""

    def __init__(self, x: torch.Tensor):
        self.c = x.double() - x.double().mean(0)
        n, d = self.c.shape
        self.norm = torch.linalg.matrix_norm(self.c.T @ self.c if d <= n else self.c @ self.c.T)

    def cka(self, other: _CkaFactor) -> float:
        c1, c2 = self.c, other.c.to(self.c.device)
        n, d1, d2 = len(c1), c1.shape[1], c2.shape[1]
        if d1 * d2 <= n * n:
            cross = torch.linalg.matrix_norm(c2.T @ c1) ** 2  # |C2^T C1|_F^2
        else:
            cross = ((c1 @ c1.T) * (c2 @ c2.T)).sum()  # tr(K1 K2), the same number
        return float(cross / (self.norm * other.norm))
