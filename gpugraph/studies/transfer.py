"""Ranking source networks by how well their representations of a target task's data fit the
target's classes, before any fine-tuning (transferability estimation).

Each source network embeds the target samples (by default: the input of its last linear
layer, the features a new head would read); each measure scores how that representation
agrees with the target labels, read as a graph where two samples are joined when they
share a class. Higher is better for every measure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gpugraph._util.errors import check_count
from gpugraph._util.types import ArrayLike
from gpugraph.graph.modularity import modularity
from gpugraph.graph.motifs import motifs
from gpugraph.knn.build import knn_graph
from gpugraph.models.capture import capture
from gpugraph.models.training import eval_modes
from gpugraph.similarity.layers import cka, layer_similarity

if TYPE_CHECKING:
    import pandas


MEASURES = {
    "lsim": "dense LSim between the features' cosine graph and the label graph (1 within a class)",
    "cka": "linear CKA between the features and the one-hot labels (kernel-target alignment)",
    "modularity": "modularity of the features' kNN graph against the labels",
    "motifs": "share of the kNN graph's triangles whose three samples share a class",
    "knn_accuracy": "leave-one-out accuracy of a k-nearest-neighbour vote on the features",
}


class SourceRanking:
    """Scores of each source (rows) by each measure (columns); higher is better.

    Examples
    --------
    >>> import gpugraph as gg
    >>> r = gg.SourceRanking({"a": {"lsim": 0.3, "cka": 0.5}, "b": {"lsim": 0.6, "cka": 0.4}}, {})
    >>> r.order("lsim"), r.order("cka")
    (['b', 'a'], ['a', 'b'])
    """

    def __init__(self, scores: dict[str, dict[str, float]], params: dict):
        self.scores, self.params = scores, params
        self.measures = list(next(iter(scores.values())))

    def order(self, measure: str = "lsim") -> list[str]:
        """Source names, best first by ``measure`` (ties keep the sources' order)."""
        self._check(measure)
        return sorted(self.scores, key=lambda name: -self.scores[name][measure])

    def kendall(self, outcome: Mapping[str, float]) -> dict[str, float]:
        """Kendall's tau-b between each measure's scores and ``outcome`` (e.g. the accuracy
        each source reaches after fine-tuning on the target), over the sources given in it."""
        from scipy.stats import kendalltau

        names = [n for n in self.scores if n in outcome]
        if len(names) < 2:
            raise ValueError(
                f"outcome must give at least two of the ranked sources {list(self.scores)}; got {list(outcome)}"
            )
        truth = [outcome[n] for n in names]
        return {m: float(kendalltau([self.scores[n][m] for n in names], truth).statistic) for m in self.measures}

    def to_dict(self) -> dict:
        return {"scores": self.scores, "params": self.params}

    def to_pandas(self) -> pandas.DataFrame:
        import pandas as pd

        return pd.DataFrame.from_dict(self.scores, orient="index")[self.measures]

    def table(self) -> str:
        width = max(8, *(len(n) for n in self.scores))
        lines = [f"{'source':<{width}}  " + "  ".join(f"{m:>12}" for m in self.measures)]
        for name, row in self.scores.items():
            lines.append(f"{name:<{width}}  " + "  ".join(f"{row[m]:12.4f}" for m in self.measures))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"SourceRanking({len(self.scores)} sources, measures={self.measures})"

    def _check(self, measure: str) -> None:
        if measure not in self.measures:
            raise ValueError(f"measure {measure!r} was not computed; this ranking has {self.measures}")


def rank_sources(
    sources: Mapping[str, nn.Module],
    target_data: tuple[ArrayLike, ArrayLike],
    *,
    layer: str | Mapping[str, str] | None = None,
    measures: Sequence[str] = ("lsim", "cka", "modularity", "motifs", "knn_accuracy"),
    k: int = 10,
    reduce: str = "flatten",
    batch_size: int = 256,
) -> SourceRanking:
    """Score every source network on the target task's labelled data, without training.

    Parameters
    ----------
    sources : mapping name -> torch.nn.Module
        Networks trained elsewhere; each is run in eval mode (its modes restored after).
    target_data : (x, y) pair
        The target's inputs and integer class labels (one per sample, at least two classes).
    layer : str, mapping name -> str, or None
        The module whose output is the representation (a name per source, or one for all);
        None: the input of each source's last ``nn.Linear`` (the features a new head reads).
    measures : sequence of str
        "lsim", "cka", "modularity", "motifs", "knn_accuracy" (all by default).
    k : int
        Neighbours of the kNN graph ("modularity", "motifs", "knn_accuracy").

    Returns
    -------
    SourceRanking: ``scores[source][measure]``, ``order(measure)``, ``kendall(outcome)``,
    ``table()``, ``to_pandas()``.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(60, 8), torch.arange(60) % 3
    >>> wide = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    >>> r = gg.rank_sources({"net": net, "wide": wide}, (x, y), measures=("lsim", "cka"))
    >>> sorted(r.order("lsim")), sorted(r.scores["net"])
    (['net', 'wide'], ['cka', 'lsim'])
    """
    if not isinstance(sources, Mapping) or not sources:
        raise TypeError("sources must be a non-empty mapping name -> torch.nn.Module")
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise ValueError(f"unknown measure(s) {unknown or list(measures)}; choose from {list(MEASURES)}")
    k = check_count(k, "k")
    x, y = _target(target_data)
    if k >= len(x):
        raise ValueError(f"k={k} needs more than k target samples; got {len(x)}")
    onehot = nn.functional.one_hot(y).to(torch.float64)  # (N, C): its cosine graph joins a class
    scores = {}
    for name, model in sources.items():
        at = layer.get(name) if isinstance(layer, Mapping) else layer
        feats = _features(model, x, y, at, reduce, batch_size, name).to(torch.float64)
        g = knn_graph(feats, k) if {"modularity", "motifs", "knn_accuracy"} & set(measures) else None
        row = {}
        for m in measures:
            if m == "lsim":
                row[m] = layer_similarity(feats, onehot)
            elif m == "cka":
                row[m] = cka(feats, onehot)
            else:
                assert g is not None  # built above for the graph measures
                if m == "modularity":
                    row[m] = modularity(g, y)
                elif m == "motifs":
                    counts = motifs(g, y)
                    total = sum(counts.values())
                    row[m] = counts["same"] / total if total else 0.0
                else:
                    votes = nn.functional.one_hot(y[g.indices], int(y.max()) + 1).sum(dim=1)  # (N, C)
                    row[m] = float((votes.argmax(dim=1) == y).double().mean())
        scores[name] = row
    return SourceRanking(
        scores,
        {"k": k, "layer": layer if not isinstance(layer, Mapping) else dict(layer), "n": len(x), "reduce": reduce},
    )


def _target(data) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("target_data must be an (inputs, labels) pair")
    x, y = data
    x = torch.as_tensor(x)
    y = torch.as_tensor(np.asarray(y))
    if y.dim() != 1 or y.dtype.is_floating_point or len(y) != len(x):
        raise ValueError(
            f"target labels must be one integer class per sample: got shape {tuple(y.shape)}, "
            f"dtype {y.dtype}, for {len(x)} inputs"
        )
    if int(y.min()) < 0 or len(torch.unique(y)) < 2:
        raise ValueError("target labels must be non-negative class indices of at least two classes")
    return x, y.long()


def _features(model: nn.Module, x, y, layer: str | None, reduce: str, batch_size: int, name: str) -> torch.Tensor:
    if layer is not None:
        return capture(model, (x, y), layers=[layer], reduce=reduce, batch_size=batch_size)[layer]
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError(f"source {name!r} has no nn.Linear layer to read features before; name a layer with layer=")
    kept: list[torch.Tensor] = []
    handle = heads[-1].register_forward_pre_hook(lambda mod, args: kept.append(args[0].detach().flatten(1).cpu()))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype)
    try:
        with torch.no_grad(), eval_modes(model):
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size].to(device, dtype))
    finally:
        handle.remove()
    if sum(len(t) for t in kept) != len(x):
        raise ValueError(
            f"the last nn.Linear of source {name!r} ran {len(kept)} times for {-(-len(x) // batch_size)} "
            "batches; name the representation's layer with layer="
        )
    return torch.cat(kept)
