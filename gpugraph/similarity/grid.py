"""The similarity matrix between every layer of one model and every layer of another (or of
the same model), and the figure that shows it: one Gram pass over all layers at once where
that pays (gram.grid), else the layer measures pair by pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from gpugraph._util import jsonio as _jsonio
from gpugraph._util.types import ArrayLike, PathLike
from gpugraph.knn.build import knn_graph
from gpugraph.knn.sources import Source, as_source
from gpugraph.similarity import gram as _gram

if TYPE_CHECKING:
    import matplotlib.axes
    import pandas
    from matplotlib.figure import Figure

from gpugraph.similarity.layers import (
    _MEASURES,
    _check_centre,
    _cka_ratio,
    _dense_lsim,
    _Factor,
    _HsicSide,
    _shared_neighbours,
    _sparse_lsim,
    _SparseFactor,
    knn_overlap,
)


class SimilarityMatrix:
    """Pairwise similarities between the layers of two captured models (or one with itself).

    Attributes: ``values`` (L1, L2) float64 array, rows the layers of model A
    (``layers_a``), columns those of model B (``layers_b``); ``measure``; ``params``.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> sim = gg.similarity_matrix(gg.capture(net, x), measure="cka")
    >>> sim.values.shape, sim.layers_a, sim.measure
    ((3, 3), ['0', '2', '4'], 'cka')
    >>> bool((abs(sim.values.diagonal() - 1) < 1e-12).all())     # each layer is itself
    True
    """

    def __init__(
        self,
        values: ArrayLike | Sequence[Sequence[float]],
        layers_a: Sequence[str],
        layers_b: Sequence[str],
        measure: str,
        params: dict | None = None,
    ):
        self.values = np.asarray(values, dtype=np.float64)
        self.layers_a, self.layers_b = list(layers_a), list(layers_b)
        if self.values.shape != (len(self.layers_a), len(self.layers_b)):
            raise ValueError(
                f"values must be (len(layers_a), len(layers_b)) = ({len(self.layers_a)}, "
                f"{len(self.layers_b)}), got {self.values.shape}"
            )
        self.measure = measure
        self.params = dict(params or {})

    def identify(self) -> list[str]:
        """For each layer of a, the most similar layer of b (ties: the first)."""
        return [self.layers_b[j] for j in self.values.argmax(axis=1)]

    def to_dict(self) -> dict:
        return {
            "measure": self.measure,
            "layers_a": self.layers_a,
            "layers_b": self.layers_b,
            "values": self.values.tolist(),
            "params": self.params,
        }

    def to_json(self, path: PathLike | None = None) -> str:
        """The matrix as JSON text; also written to ``path`` when given."""
        return _jsonio.dump(self.to_dict(), path)

    @classmethod
    def from_json(cls, text_or_path: str | PathLike) -> SimilarityMatrix:
        """Rebuild a matrix from :meth:`to_json` output or a file holding it."""
        data = _jsonio.load(text_or_path)
        return cls(data["values"], data["layers_a"], data["layers_b"], data["measure"], data.get("params"))

    def to_pandas(self) -> pandas.DataFrame:
        """A DataFrame: index the layers of model A, columns those of model B."""
        import pandas as pd

        return pd.DataFrame(
            self.values, index=pd.Index(self.layers_a, name="model A"), columns=pd.Index(self.layers_b, name="model B")
        )

    @property
    def label(self) -> str:
        """The measure as computed: "lsim", "lsim (centred)", "lsim (k=10)", "cka (unbiased)"."""
        how = [f"k={self.params['k']}"] if self.params.get("k") is not None else []
        how += [word for key, word in (("centre", "centred"), ("unbiased", "unbiased")) if self.params.get(key)]
        return f"{self.measure} ({', '.join(how)})" if how else self.measure

    def table(self) -> str:
        """Fixed-width text: for each layer of model A its best match in model B and the
        value, then the whole matrix when it is small enough to read."""
        width_a = max(len("model A"), *(len(n) for n in self.layers_a))
        width_b = max(len("best in B"), *(len(n) for n in self.layers_b))
        lines = [
            f"{self.label}: rows model A, columns model B",
            f"{'model A':<{width_a}}  {'best in B':<{width_b}}  {'value':>7}",
        ]
        for name, best, row in zip(self.layers_a, self.identify(), self.values, strict=True):
            lines.append(f"{name:<{width_a}}  {best:<{width_b}}  {row.max():7.3f}")
        if len(self.layers_b) <= 12:
            cols = [n[:8] for n in self.layers_b]
            lines += ["", " " * width_a + "".join(f"  {c:>8}" for c in cols)]
            for name, row in zip(self.layers_a, self.values, strict=True):
                lines.append(f"{name:<{width_a}}" + "".join(f"  {v:8.3f}" for v in row))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(
        self,
        path: PathLike | None = None,
        title: str | None = None,
        *,
        names: tuple[str, str] = ("model A", "model B"),
        ax: matplotlib.axes.Axes | None = None,
    ) -> PathLike | matplotlib.axes.Axes:
        """Draw the matrix as a heat map: layers of model A down, model B across, with the
        values written in the cells of small grids. With ``path`` the figure is written as
        a PNG and the path returned; without, the matplotlib Axes is returned."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        la, lb = len(self.layers_a), len(self.layers_b)
        if ax is None:
            _, ax = plt.subplots(figsize=(max(4, 0.45 * lb + 3), max(3.5, 0.4 * la + 2)))
        im = ax.imshow(self.values, cmap="viridis", origin="upper")
        ax.set_xticks(range(lb), self.layers_b, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(la), self.layers_a, fontsize=8)
        ax.set_xlabel(f"{names[1]}: layer")
        ax.set_ylabel(f"{names[0]}: layer")
        ax.set_title(title or self.label)
        if la * lb <= 400:
            mid = (np.nanmax(self.values) + np.nanmin(self.values)) / 2
            for i in range(la):
                for j in range(lb):
                    ax.text(
                        j,
                        i,
                        f"{self.values[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if self.values[i, j] > mid else "white",
                    )
        ax.figure.colorbar(im, ax=ax)
        if path is None:
            return ax
        figure = cast("Figure", ax.figure)  # ours, or the caller's axes' figure
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path

    def __repr__(self) -> str:
        return f"SimilarityMatrix({self.label}, {self.values.shape[0]} x {self.values.shape[1]} layers)"


def similarity_matrix(
    acts_a: Mapping,
    acts_b: Mapping | None = None,
    measure: str = "lsim",
    k: int | None = None,
    unbiased: bool = False,
    centre: bool = False,
) -> SimilarityMatrix:
    """Similarity of every layer of ``acts_a`` with every layer of ``acts_b`` (default: itself).

    ``measure``: "lsim" (GBS layer similarity; ``k`` None for dense graphs or an int for
    kNN graphs; ``centre=True`` for dense graphs of centred features, see
    :func:`layer_similarity`), "cka" (linear CKA; ``unbiased=True`` for the unbiased HSIC estimator, see
    :func:`cka`), "knn_overlap" and "mutual_knn" (``k`` defaults to 10). Per-layer work
    (unit rows, Gram factors, kNN graphs) is done once per layer and reused across the
    grid. Dense LSim and plug-in CKA over many wide layers take every pair in one pass over
    blocks of rows of all layers' N x N matrices (never one whole), when that costs fewer
    FLOPs than the pairs one at a time (see gpugraph.similarity.gram.grid).

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> other = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    >>> sim = gg.similarity_matrix(gg.capture(net, x), gg.capture(other, x), measure="lsim")
    >>> sim.values.shape                    # rows: the layers of net, columns: those of other
    (3, 2)
    >>> bool(abs(sim.values[2, 1] - gg.layer_similarity(net(x), other(x))) < 1e-12)
    True
    """
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {_MEASURES}, got {measure!r}")
    if measure == "cka" and k is not None:
        raise ValueError(f"k={k} has no meaning for measure='cka' (CKA uses no graph); leave k out")
    if unbiased and measure != "cka":
        raise ValueError(f"unbiased=True is an estimator of CKA; it has no meaning for measure={measure!r}")
    _check_centre(centre, measure, k)
    same = acts_b is None
    layers_a = _checked_layers(acts_a, "acts_a")
    n = len(next(iter(layers_a.values())))
    layers_b = layers_a if same else _checked_layers(acts_b, "acts_b", n)
    params = {"k": k, **({"unbiased": True} if unbiased else {}), **({"centre": True} if centre else {})}
    if k is None and measure in ("lsim", "cka"):
        values = _grid_values(layers_a, None if same else layers_b, measure, unbiased, centre)
        if values is not None:
            return SimilarityMatrix(values, list(layers_a), list(layers_b), measure, params)
    prep = _preparer(measure, k, unbiased, centre)
    fa = {name: prep(src) for name, src in layers_a.items()}
    fb = fa if same else {name: prep(src) for name, src in layers_b.items()}
    pair = _pair_measure(measure, k, unbiased)
    a_list, b_list = list(fa.values()), list(fb.values())
    values = np.empty((len(a_list), len(b_list)))
    for i, f in enumerate(a_list):
        # every measure is symmetric: a grid of one set with itself fills its lower half by mirroring
        for j in range(i if same else 0, len(b_list)):
            values[i, j] = pair(f, b_list[j])
            if same:
                values[j, i] = values[i, j]
    return SimilarityMatrix(values, list(fa), list(fb), measure, params)


def _grid_values(
    layers_a: dict, layers_b: dict | None, measure: str, unbiased: bool, centre: bool
) -> np.ndarray | None:
    """Dense LSim or CKA of every pair through gpugraph.similarity.gram.grid, or None where the pairs
    one at a time cost fewer FLOPs."""
    if unbiased and next(iter(layers_a.values())).n < 4:
        raise ValueError("the unbiased CKA estimator needs at least 4 samples")
    # the U-centred Gram does not see a shift of the features: the centred rows lose no digits
    make = _rows_maker(measure, centre)
    ra = [make(src) for src in layers_a.values()]
    rb = None if layers_b is None else [make(src) for src in layers_b.values()]
    if not _gram.grid_pays(ra, rb):
        return None
    names = list(layers_a) + ([] if layers_b is None else list(layers_b))
    kind = "adjacency" if measure == "lsim" else "ucentred" if unbiased else "gram"
    sums, sq_a, sq_b = _gram.grid(ra, rb, kind=kind, names=names)
    if measure == "lsim":
        return (sums / ra[0].n).cpu().numpy()
    if not (bool((sq_a > 0).all()) and bool((sq_b > 0).all())):
        raise ValueError(
            "the HSIC of a representation with itself is not positive: the unbiased "
            "estimator needs more samples (or the representation is constant)"
        )
    return (sums / torch.sqrt(sq_a[:, None] * sq_b[None, :])).cpu().numpy()


def _checked_layers(acts, label: str, n: int | None = None) -> dict[str, Source]:
    """Every layer of ``acts`` as an (N, D) source of the same N (``n``, or the first
    layer's), or an error naming the layer; rows are checked as the measures read them."""
    if not isinstance(acts, Mapping) or not acts:
        raise TypeError(f"{label} must be a non-empty mapping layer name -> (N, D) tensor (see capture)")
    layers = {}
    for name, x in acts.items():
        t = as_source(x, f"layer {name!r} of {label}")
        n = t.n if n is None else n
        if t.n != n:
            raise ValueError(
                f"every layer must hold the same samples: layer {name!r} of {label} has N={t.n}, expected N={n}"
            )
        layers[name] = t
    if n is None or n < 3:
        raise ValueError(f"need at least 3 samples to compare representations, got N={n}")
    return layers


def _rows_maker(measure: str, centre: bool = False):
    """A layer's float64 rows as dense LSim ("lsim": unit rows, centred first with
    ``centre``) or plug-in CKA ("cka": centred rows) reads them."""
    if measure == "lsim":
        unit = _gram.Rows.unit_centred if centre else _gram.Rows.unit
        return lambda src: unit(src, src.name)
    return lambda src: _gram.Rows.centred(src, src.name)


def _preparer(measure: str, k: int | None, unbiased: bool = False, centre: bool = False):
    """The per-layer work of a measure, from a layer's Source (whose name errors use)."""
    if measure == "lsim" and k is None:
        rows = _rows_maker(measure, centre)
        return lambda src: _Factor(rows(src))
    if measure == "cka":
        if unbiased:
            return _UnbiasedCkaFactor
        rows = _rows_maker(measure)
        return lambda src: _CkaFactor(rows(src))
    kk = k if k is not None else 10
    if measure == "lsim":
        return lambda src: _SparseFactor(knn_graph(src, kk))
    return lambda src: knn_graph(src, kk)


def _pair_measure(measure: str, k: int | None, unbiased: bool = False):
    if measure == "lsim":
        return _dense_lsim if k is None else _sparse_lsim
    if measure == "cka":
        return _UnbiasedCkaFactor.cka if unbiased else _CkaFactor.cka
    if measure == "knn_overlap":
        return knn_overlap
    kk = k if k is not None else 10
    return lambda g1, g2: float(_shared_neighbours(g1, g2).double().mean() / kk)


class _CkaFactor:
    """One layer's centred rows (scaled on the fly, no copy) and |C^T C|_F."""

    def __init__(self, rows: _gram.Rows):
        self.rows = rows
        self.self_total = _gram.total(rows, rows)

    def cka(self, other: _CkaFactor) -> float:
        return _cka_ratio(_gram.total(self.rows, other.rows), self.self_total, other.self_total)


class _UnbiasedCkaFactor:
    """One layer's share of the unbiased HSIC (O(N D), its own scale) and its HSIC with
    itself; a pair then costs one Gram sum."""

    def __init__(self, src: Source):
        self.side = _HsicSide(src, src.name)
        self.self_hsic = self.side.hsic(self.side)

    def cka(self, other: _UnbiasedCkaFactor) -> float:
        return _cka_ratio(self.side.hsic(other.side), self.self_hsic, other.self_hsic)
