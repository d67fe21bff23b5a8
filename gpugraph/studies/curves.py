"""Layer-wise modularity curves (Lu et al., ECCV 2022) and the curve object."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from gpugraph._util import jsonio as _jsonio
from gpugraph._util import progress as _progress
from gpugraph._util.convert import label_codes
from gpugraph._util.errors import check_count
from gpugraph._util.types import ArrayLike, Labels, PathLike, Progress, RowSource
from gpugraph.graph.modularity import check_options, modularity_of, null_of
from gpugraph.graph.motifs import motifs_of
from gpugraph.knn.build import build, check_k
from gpugraph.knn.sources import Source, as_source

if TYPE_CHECKING:
    import matplotlib.axes
    import pandas
    from matplotlib.figure import Figure


class LayerCurve:
    """A per-layer measure: mean and standard deviation over repeated subsets.

    Attributes
    ----------
    layers : list of str
    mean, std : (L,) float64 arrays
    values : (repeats, L) float64 array, one row per subset
    params : dict, how the curve was made (k, n, repeats, seed, mode, measure)
    null : dict or None
        With ``modularity_curve(..., null=P)``: the permutation null of every point,
        (repeats, L) arrays under "mean", "std", "z" and "p" (see
        :func:`gpugraph.modularity_null`) and "permutations".

    Examples
    --------
    >>> import numpy as np, gpugraph as gg
    >>> curve = gg.LayerCurve(["conv1", "block1", "block2", "fc"],
    ...                       np.array([[0.20, 0.50, 0.505, 0.80], [0.22, 0.52, 0.515, 0.82]]))
    >>> curve.mean.round(3).tolist(), curve.redundant(tol=0.01)
    ([0.21, 0.51, 0.51, 0.81], ['block2'])
    >>> gg.LayerCurve.from_json(curve.to_json()).layers == curve.layers
    True
    """

    _NULL_KEYS = ("mean", "std", "z", "p")

    def __init__(
        self,
        layers: Sequence[str],
        values: ArrayLike | Sequence[Sequence[float]],
        params: dict | None = None,
        null: dict | None = None,
    ):
        self.layers = list(layers)
        self.values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if self.values.shape[1] != len(self.layers):
            raise ValueError(
                f"values must have one column per layer: {len(self.layers)} layers, got shape {self.values.shape}"
            )
        self.params = dict(params or {})
        self.null: dict[str, Any] | None = None
        if null is not None:
            self.null = {
                key: np.asarray(null[key], dtype=np.float64).reshape(self.values.shape) for key in self._NULL_KEYS
            }
            self.null["permutations"] = int(null["permutations"])

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation over the subsets (ddof=0; 0 for a single subset)."""
        return self.values.std(axis=0)

    @property
    def z(self) -> np.ndarray | None:
        """Per layer, the mean over the subsets of the points' z-scores against the
        permutation null (None without ``null``)."""
        return None if self.null is None else self.null["z"].mean(axis=0)

    def ci(self, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
        """Bootstrap confidence interval of each layer's mean: (L, 2), low and high.

        The subsets are the resampled units: ``resamples`` times, as many subsets' values
        as there are are drawn with replacement and averaged; the interval is the central
        ``level`` share of those means (the percentile bootstrap). It needs at least two
        subsets and undercovers with few (with 5, a 95% interval is nearer 85%): read it
        beside :attr:`std`, and draw more subsets where it matters.
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level}")
        check_count(resamples, "resamples")
        r = len(self.values)
        if r < 2:
            raise ValueError("a bootstrap interval needs at least 2 subsets (repeats >= 2); this curve has 1")
        pick = np.random.default_rng(seed).integers(0, r, size=(resamples, r))  # (B, R)
        means = self.values[pick].mean(axis=1)  # (B, L)
        tail = (1 - level) / 2
        return np.quantile(means, [tail, 1 - tail], axis=0).T

    @property
    def delta(self) -> np.ndarray:
        """Change of the mean from the previous layer (NaN for the first)."""
        return np.concatenate([[np.nan], np.diff(self.mean)])

    def redundant(self, tol: float = 0.01) -> list[str]:
        """Layers on a plateau or a dip of the curve, by name, in order.

        Layer i (not the first) is redundant when the mean modularity changes by less than
        ``tol`` from layer i - 1: a plateau (``|delta Q| < tol``) or a dip (delta Q < 0), since
        the layer does not improve the separation of the classes. The model's output layer
        (:attr:`final`) is never listed: it cannot be pruned. Lu et al. (2022) prune such
        layers and retrain; they mark plateaus by eye, so ``tol`` is the user's choice.
        """
        if tol < 0:
            raise ValueError(f"tol must be non-negative, got {tol}")
        final = set(self.final)
        return [
            name
            for name, dq in zip(self.layers, self.delta, strict=True)
            if not np.isnan(dq) and dq < tol and name not in final
        ]

    @property
    def final(self) -> list[str]:
        """Layers whose output is the model's output (a classifier head): never redundant,
        since removing them removes the model's answer (``params["final"]``, from capture)."""
        return list(self.params.get("final", []))

    def to_dict(self) -> dict:
        """layers, mean, std, values, params; "ci95" (:meth:`ci`) with two or more subsets;
        "z" and "null" with a null."""
        out = {
            "layers": self.layers,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "values": self.values.tolist(),
            "params": self.params,
        }
        if len(self.values) >= 2:
            out["ci95"] = self.ci(0.95).tolist()
        z = self.z
        if self.null is not None and z is not None:
            out["z"] = z.tolist()
            out["null"] = {key: (v.tolist() if isinstance(v, np.ndarray) else v) for key, v in self.null.items()}
        return out

    def to_json(self, path: PathLike | None = None) -> str:
        """The curve as JSON text; also written to ``path`` when given."""
        return _jsonio.dump(self.to_dict(), path)

    @classmethod
    def from_json(cls, text_or_path: str | PathLike) -> LayerCurve:
        """Rebuild a curve from :meth:`to_json` output or a file holding it."""
        data = _jsonio.load(text_or_path)
        return cls(data["layers"], data["values"], data.get("params"), data.get("null"))

    def to_pandas(self) -> pandas.DataFrame:
        import pandas as pd

        red = set(self.redundant())
        columns = {"layer": self.layers, "mean": self.mean, "std": self.std, "delta": self.delta}
        if self.null is not None:
            columns["z"] = self.z
        columns["redundant"] = [name in red for name in self.layers]
        return pd.DataFrame(columns)

    def table(self, tol: float = 0.01) -> str:
        """A fixed-width text table: layer, mean, std, delta (and, with a null, the mean
        z-score), and a mark on redundant layers."""
        red = set(self.redundant(tol))
        width = max(8, *(len(n) for n in self.layers))
        z = self.z
        lines = [
            f"{'layer':<{width}}  {'mean':>7}  {'std':>6}  {'delta':>7}"
            + ("  {:>7}".format("z") if z is not None else "")
        ]
        if "k" in self.params and "n" in self.params:  # the numbers move with k and n: say which
            n = self.params.get("n")
            lines.insert(
                0,
                f"k = {self.params['k']}, "
                + (f"{self.params.get('repeats')} subsets of n = {n}" if n else "all samples once"),
            )
        final = set(self.final)
        for j, (name, m, s, d) in enumerate(zip(self.layers, self.mean, self.std, self.delta, strict=True)):
            delta = "" if np.isnan(d) else f"{d:+.3f}"
            mark = "  redundant" if name in red else "  (model output)" if name in final else ""
            score = f"  {z[j]:7.1f}" if z is not None else ""
            lines.append(f"{name:<{width}}  {m:7.3f}  {s:6.3f}  {delta:>7}{score}{mark}")
        if z is not None and self.null is not None:
            lines.append(
                f"z: (Q - null mean) / null std over {self.null['permutations']} label permutations, "
                "mean over the subsets"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"LayerCurve({len(self.layers)} layers, params={self.params})"

    def plot(
        self,
        path: PathLike | None = None,
        *,
        label: str | None = None,
        others: Mapping | None = None,
        tol: float = 0.01,
        ax: matplotlib.axes.Axes | None = None,
        removed: Sequence[str] = (),
    ) -> PathLike | matplotlib.axes.Axes:
        """Draw the mean with a band of one std, redundant layers circled, ``removed`` layers
        (e.g. a :func:`gpugraph.prune_plan`'s) crossed.

        ``others`` maps a legend label to more curves over the same layers (e.g. the
        untrained model) drawn on the same axes. With ``path`` the figure is written as a
        PNG and the path returned; without, the matplotlib Axes is returned (for notebooks),
        drawn on ``ax`` if given.
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(6, 0.45 * len(self.layers) + 2), 4))
        curves = {label or self.params.get("measure", "modularity"): self, **(others or {})}
        for name, curve in curves.items():
            if curve.layers != self.layers:
                raise ValueError(
                    f"curve {name!r} has layers {curve.layers}, this curve {self.layers}: "
                    "only curves over the same layers are drawn together"
                )
        xs = np.arange(len(self.layers))
        for name, curve in curves.items():
            ax.plot(xs, curve.mean, marker="o", label=name)
            ax.fill_between(xs, curve.mean - curve.std, curve.mean + curve.std, alpha=0.25)
        if self.null is not None:  # where chance puts Q: the permutation null's mean +- 2 std
            mid, spread = self.null["mean"].mean(axis=0), self.null["std"].mean(axis=0)
            ax.fill_between(
                xs,
                mid - 2 * spread,
                mid + 2 * spread,
                color="grey",
                alpha=0.3,
                label=f"null, mean +- 2 std ({self.null['permutations']} label permutations)",
            )
        red = [self.layers.index(n) for n in self.redundant(tol)]
        if red:
            ax.scatter(
                xs[red],
                self.mean[red],
                s=120,
                facecolors="none",
                edgecolors="red",
                label=f"redundant (dQ < {tol})",
                zorder=3,
            )
        gone = [self.layers.index(n) for n in removed]
        if gone:
            ax.scatter(xs[gone], self.mean[gone], s=80, marker="x", color="black", label="removed", zorder=4)
        ax.set_xticks(xs, self.layers, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(self.params.get("measure", "modularity"))
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend()
        if path is None:
            return ax
        figure = cast("Figure", ax.figure)  # ours, or the caller's axes' figure
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return path


def subsets(n_total: int, n: int | None, repeats: int, seed: int) -> list[np.ndarray]:
    """``repeats`` disjoint random subsets of ``n`` of ``n_total`` samples (None: all, once)."""
    if n is None:
        return [np.arange(n_total)]
    if n < 2 or repeats < 1:
        raise ValueError(f"need n >= 2 and repeats >= 1, got n={n}, repeats={repeats}")
    if n * repeats > n_total:
        raise ValueError(
            f"{repeats} disjoint subsets of {n} samples need {n * repeats} samples, but there "
            f"are {n_total}; lower n or repeats, or pass n=None to use all samples once"
        )
    perm = np.random.default_rng(seed).permutation(n_total)
    return [np.sort(perm[i * n : (i + 1) * n]) for i in range(repeats)]


def _labels_of(acts, labels):
    if labels is None:
        labels = getattr(acts, "labels", None)
        if labels is None:
            raise ValueError("no labels: pass labels=..., or capture data that yields (inputs, labels)")
    return labels


def _layer_items(acts, allow_empty: bool = False):
    """Every layer as an (N, D) source, each row checked once, up front: a NaN, Inf or
    all-zero row is reported by layer and by its row in ``acts``, whichever subsets the
    curve draws later. ``allow_empty``: layers of 0 rows pass (a rank holding no samples)."""
    if not isinstance(acts, Mapping) or not acts:
        raise TypeError("acts must be a non-empty mapping layer name -> (N, D) tensor (see capture)")
    if allow_empty and all(len(x) == 0 for x in acts.values()):
        return [(name, Source(tensor=torch.as_tensor(x), name=f"layer {name!r}")) for name, x in acts.items()], 0
    items = [(name, as_source(x, f"layer {name!r}")) for name, x in acts.items()]
    n_total = items[0][1].n
    for name, src in items:
        if src.n != n_total:
            raise ValueError(f"layer {name!r} has {src.n} samples, the first layer {n_total}")
    for _, src in items:
        src.check(nonzero=True)
    return items, n_total


def modularity_curve(
    acts: Mapping[str, RowSource],
    labels: Labels | None = None,
    k: int = 3,
    n: int | None = 500,
    repeats: int = 5,
    seed: int = 0,
    mode: str = "mean",
    negative: str = "keep",
    progress: Progress = None,
    null: int = 0,
) -> LayerCurve:
    """Layer-wise modularity: per layer, the mean and std over disjoint random subsets.

    For each of ``repeats`` disjoint random subsets of ``n`` samples and each layer, build
    the exact cosine k-NN graph of the layer's (flattened) outputs, symmetrise it
    (``mode``, default the paper's (W + W^T)/2) and compute its modularity with the class
    labels as communities. The same subsets serve every layer.

    Parameters
    ----------
    acts : Activations or mapping name -> (N, D) tensor
    labels : length-N labels; default ``acts.labels``
    k, n, repeats, seed, mode : as in Lu et al. (2022): k = 3, 5 subsets of n = 500.
        ``n=None`` uses all samples once.
    negative : passed to :func:`modularity`.
    progress : bool or callable, optional
        A bar per layer: None shows it only when stderr is a terminal; a callable is
        called as ``progress(layers_done, layers)``.
    null : int
        With P > 0, each point is also read against P permutations of its subset's labels
        (:func:`gpugraph.modularity_null`, seeded by ``seed`` and the subset): the curve's
        ``null`` and :attr:`~LayerCurve.z`, a column of the table, a band of
        the plot.

    Returns
    -------
    LayerCurve

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    >>> y = torch.arange(40) % 2
    >>> split = x + 10 * (2 * y[:, None] - 1)  # the classes on opposite sides
    >>> curve = gg.modularity_curve({"raw": x, "split": split}, y, n=20, repeats=2)
    >>> bool(curve.mean[1] > 0.4 > curve.mean[0])
    True

    References
    ----------
    H. Lu et al., "Understanding the Dynamics of DNNs Using Graph Modularity", ECCV 2022,
    doi:10.1007/978-3-031-19775-8_14.
    """
    null = check_count(null, "null", minimum=0, what="a number of permutations >= 0 (0: none)")
    check_options(mode, negative)
    items, n_total = _layer_items(acts)
    codes, classes = label_codes(_labels_of(acts, labels), n_total, torch.device("cpu"))
    parts = subsets(n_total, n, repeats, seed)
    check_k(k, len(parts[0]))
    values = np.empty((len(parts), len(items)))
    nulls = {key: np.empty_like(values) for key in LayerCurve._NULL_KEYS}
    bar = _progress.bar(progress, len(items), "layer", "modularity")
    for j, (_, src) in enumerate(items):  # checked once above: below here nothing is checked again
        for i, idx in enumerate(parts):
            g, part = build(src.subset(idx), k), codes[idx].to(src.device)
            if null:
                r = null_of(g, part, len(classes), null, seed + i, mode, negative=negative)
                values[i, j] = r.q
                for key in LayerCurve._NULL_KEYS:
                    nulls[key][i, j] = getattr(r, key)
            else:
                values[i, j] = modularity_of(g, part, len(classes), mode, negative=negative)
        bar.update(1)
    bar.close()
    params = {
        "measure": "modularity",
        "k": k,
        "n": n,
        "repeats": len(parts),
        "seed": seed,
        "mode": mode,
        "negative": negative,
        "final": list(getattr(acts, "final", [])),
    }
    curve = LayerCurve([name for name, _ in items], values, params, {**nulls, "permutations": null} if null else None)
    _warn_if_flat(curve)
    return curve


def _warn_if_flat(curve: LayerCurve) -> None:
    """Warn when the layers cannot be told apart: the spread of the means is within two
    standard deviations of the subsets (needs 3 layers and 2 subsets)."""
    if len(curve.layers) < 3 or len(curve.values) < 2:
        return
    spread, noise = float(np.ptp(curve.mean)), float(curve.std.max())
    if spread <= 2 * noise:
        warnings.warn(
            f"the modularity curve is flat within its error bars (means span {spread:.3f}, "
            f"std up to {noise:.3f}): the layers do not differ in class separation here, so "
            "redundant() means little; with convolutional layers try capture(..., "
            "reduce='avgpool') (position-blind features), or larger subsets n",
            stacklevel=3,
        )


def motif_curve(
    acts: Mapping[str, RowSource],
    labels: Labels | None = None,
    k: int = 5,
    n: int | None = 500,
    repeats: int = 5,
    seed: int = 0,
    progress: Progress = None,
) -> LayerCurve:
    """Per layer, the share of same-class triangles in the union kNN graph (Chen et al., 2024).

    For each subset and layer, :func:`gpugraph.motifs` counts the triangles of the
    binarised, symmetrised k-NN graph by whether their nodes are all in one class, in two,
    or in three; the curve's values are the share of "same" triangles (0 where a graph has
    no triangle). The mean counts per layer are kept in ``params["counts"]``. Deep layers of
    a trained network gather samples of a class into dense clusters of same-class triangles.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> curve = gg.motif_curve(gg.capture(net, (x, y)), k=5, n=None)
    >>> curve.layers, curve.params["measure"]
    (['0', '2', '4'], 'same-class triangle share')
    >>> bool(((curve.mean >= 0) & (curve.mean <= 1)).all())
    True
    """
    items, n_total = _layer_items(acts)
    codes, _ = label_codes(_labels_of(acts, labels), n_total, torch.device("cpu"))
    parts = subsets(n_total, n, repeats, seed)
    check_k(k, len(parts[0]))
    values = np.empty((len(parts), len(items)))
    counts = {}
    bar = _progress.bar(progress, len(items), "layer", "motifs")
    for j, (name, src) in enumerate(items):
        per = []
        for i, idx in enumerate(parts):
            c = motifs_of(build(src.subset(idx), k), codes[idx].to(src.device))
            per.append(c)
            total = sum(c.values())
            values[i, j] = c["same"] / total if total else 0.0
        counts[name] = {key: float(np.mean([c[key] for c in per])) for key in ("same", "pair", "distinct")}
        bar.update(1)
    bar.close()
    params = {
        "measure": "same-class triangle share",
        "k": k,
        "n": n,
        "repeats": len(parts),
        "seed": seed,
        "counts": counts,
    }
    return LayerCurve([name for name, _ in items], values, params)
