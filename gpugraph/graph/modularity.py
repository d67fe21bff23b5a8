"""Modularity of a kNN graph against a labelling of its nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gpugraph._util.convert import label_codes
from gpugraph._util.errors import check_count
from gpugraph.graph.knngraph import KnnGraph, check_graph, check_mode, symmetric_from
from gpugraph.kernels import graph_cpu as _graph_cpu
from gpugraph.kernels.threads import use_threads

_NEGATIVE = ("keep", "clip", "raise")


def modularity(
    g: KnnGraph,
    labels,
    mode: str = "mean",
    weighted: bool = True,
    resolution: float = 1.0,
    negative: str = "keep",
) -> float:
    """Modularity of the symmetrised graph ``g.adjacency(mode, weighted)`` under ``labels``.

    Q = 1/(2m) * sum_ij [A_ij - resolution * s_i s_j / (2m)] * delta(c_i, c_j), with
    s_i = sum_j A_ij the strength of node i and 2m = sum_ij A_ij. This is the quantity that
    ``networkx.algorithms.community.modularity`` returns on the same weighted graph, and with
    ``mode="mean"`` the layer modularity of Lu et al. (2022).

    Computed in the form Q = L_in / (2m) - resolution * sum_c (S_c / 2m)^2, where L_in sums
    A_ij over ordered same-class pairs and S_c is the total strength of class c, from the
    graph's edge lists in float64 without building the sparse matrix.

    Parameters
    ----------
    g : KnnGraph
    labels : sequence, array or tensor of N hashable values (ints, strings, ...)
        The community of each node.
    mode : {"mean", "max", "mutual"}
        How the directed kNN lists are symmetrised; see :class:`KnnGraph`.
    weighted : bool
        Use the cosine weights (True) or 1 for every edge (False).
    resolution : float
        The resolution parameter gamma; 1 is the classical modularity.
    negative : {"keep", "clip", "raise"}
        What to do with negative cosine weights (possible between centred or low-dimensional
        features, never between ReLU outputs). "keep" evaluates the formula with the weights
        as they are, as networkx and the authors' code do; strengths and 2m then lose their
        reading as edge mass, so treat such values with care. "clip" sets negative directed
        weights W_ij to zero before the graph is symmetrised (A = sym(max(W, 0)): in "mean"
        mode, as if those directed edges were absent); "raise" refuses any negative W_ij.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If labels do not have N entries, the total weight 2m is not positive (no edges in
        this mode, or negative weights outweigh the rest), or ``negative="raise"`` and some
        directed weight is negative.

    Notes
    -----
    O(N k) time and memory.

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g = gg.KnnGraph(torch.tensor([[1], [0], [3], [2]]), torch.ones(4, 1))
    >>> gg.modularity(g, [0, 0, 1, 1])
    0.5

    References
    ----------
    M. E. J. Newman, "Networks: An Introduction", Oxford University Press (2010), eq. 7.76.
    H. Lu et al., "Understanding the Dynamics of DNNs Using Graph Modularity", ECCV 2022,
    doi:10.1007/978-3-031-19775-8_14.
    """
    codes, classes = _door(g, labels, mode, negative)
    return modularity_of(g, codes, classes, mode, weighted, resolution, negative)


def _door(g: KnnGraph, labels, mode: str, negative: str) -> tuple[torch.Tensor, int]:
    """Check a graph and the options of a modularity; the labels as int64 codes on g's
    device, and the number of classes."""
    check_graph(g)
    check_options(mode, negative)
    codes, classes = label_codes(labels, g.n, g.device)
    return codes, len(classes)


def check_options(mode: str, negative: str) -> None:
    """Refuse an unknown symmetrisation ``mode`` or ``negative`` policy."""
    if negative not in _NEGATIVE:
        raise ValueError(f"negative must be one of {_NEGATIVE}, got {negative!r}")
    check_mode(mode)


def modularity_of(g: KnnGraph, codes: torch.Tensor, classes: int, mode: str = "mean", weighted: bool = True,
                  resolution: float = 1.0, negative: str = "keep") -> float:
    """:func:`modularity` below its door: a checked graph, int64 ``codes`` in 0..classes-1
    on its device, valid options (the studies that check their inputs once call this)."""
    if g.device.type == "cpu":  # one compiled pass over the edges
        recip, partner_w = g.reciprocity()
        clip = negative == "clip" and weighted
        use_threads(g.indices.numel())
        two_m, within, class_strength, lowest = _graph_cpu.modularity_sums(
            g.indices.contiguous().numpy(), g.weights.contiguous().numpy(), recip.numpy(), partner_w.numpy(),
            codes.numpy(), classes, _graph_cpu.MODES[mode], weighted, clip)
        if not (negative == "raise" and weighted and lowest < 0):
            _check_mass(two_m, mode)
            return float(within / two_m - resolution * ((class_strength / two_m) ** 2).sum())
    both, strength, two_m = edge_mass(g, mode, weighted, negative)
    class_strength = torch.zeros(classes, dtype=torch.float64, device=g.device)
    class_strength.index_add_(0, codes, strength)
    within = (both * (codes[:, None] == codes[g.indices])).sum()
    q = within / two_m - resolution * ((class_strength / two_m) ** 2).sum()
    return float(q)


def edge_mass(g: KnnGraph, mode: str, weighted: bool, negative: str):
    """The symmetric adjacency's mass in float64: ``both`` (N, k), all of A_ij + A_ji that
    edge (i, indices[i, a]) carries; the strengths s_i (N,); 2m. Negative weights as
    :func:`modularity`'s ``negative`` says."""
    if negative != "keep" and weighted and bool((g.weights < 0).any()):
        if negative == "raise":
            raise ValueError(_negative_message(g))
        recip, partner_w = g.reciprocity()  # "clip": the directed weights, before symmetrising
        fwd, rev = symmetric_from(g.weights.clamp(min=0.0), recip, partner_w.clamp(min=0.0), mode, weighted,
                                  torch.float64)
    else:
        fwd, rev = g.symmetric_weights(mode, weighted, dtype=torch.float64)  # (N, k) each
    both = fwd + rev  # sums to 2m
    two_m = float(both.sum())
    _check_mass(two_m, mode)
    # s_i: row i's own edges, plus the reverse halves of one-way edges pointing at i.
    strength = fwd.sum(dim=1).index_add_(0, g.indices.flatten(), rev.flatten())  # (N,)
    return both, strength, two_m


def _negative_message(g: KnnGraph) -> str:
    count = int((g.weights < 0).sum())
    return (f"the graph has {count} directed edges with negative cosine weight (min "
            f"{float(g.weights.min()):.3g}); pass negative='keep' (the formula as is, like networkx) "
            "or 'clip', or weighted=False")


def _check_mass(two_m: float, mode: str) -> None:
    if not two_m > 0.0:
        raise ValueError(
            f"the {mode!r} graph has total weight 2m = {two_m:.3g}, so its modularity is "
            "undefined: it has no edges in this mode, or negative weights cancel the rest "
            "(try negative='clip' or weighted=False)"
        )


@dataclass(frozen=True)
class NullModularity:
    """The modularity of a labelling against random relabellings that keep the class sizes.

    Attributes
    ----------
    q : float
        The modularity under the given labels (:func:`modularity`'s value).
    mean, std : float
        Mean and standard deviation (ddof = 1) of the modularity over the permutations.
    z : float
        (q - mean) / std; NaN when std is 0 (e.g. a single class).
    p : float
        One-sided permutation p-value, (1 + #{q_perm >= q}) / (permutations + 1): never 0,
        and at least 1 / (permutations + 1).
    permutations : int
    samples : (permutations,) float64 array, the modularity under each permutation.
    """

    q: float
    mean: float
    std: float
    z: float
    p: float
    permutations: int
    samples: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"q": self.q, "mean": self.mean, "std": self.std, "z": self.z, "p": self.p,
                "permutations": self.permutations}


def modularity_null(
    g: KnnGraph, labels, permutations: int = 1000, seed: int = 0, *, mode: str = "mean",
    weighted: bool = True, resolution: float = 1.0, negative: str = "keep",
) -> NullModularity:
    """Is a modularity more than chance? Compare it with random permutations of the labels.

    Each permutation shuffles the labels over the nodes (so every class keeps its size) and
    takes the modularity of the same graph under them; ``q`` is then read against that
    distribution as a z-score and a one-sided p-value. Permutations are drawn from NumPy's
    ``default_rng(seed)``, one after the other, so a seed gives the same samples on every
    machine, device and thread count.

    On the CPU all the permutations are evaluated in compiled passes over the edges, each
    serving 64 of them (O(N k P) time, O(N P) bytes of codes for a batch of permutations);
    elsewhere in batches of torch operations. Drawing the permutations (NumPy's generator,
    about 10 ns a label) takes most of the time: of the 0.7 s that 1000 permutations of
    50 000 labels take, about 0.5 s (benchmarks/bench_graph.py).

    Parameters
    ----------
    g, labels, mode, weighted, resolution, negative : as in :func:`modularity`.
    permutations : int >= 1
    seed : int

    Returns
    -------
    NullModularity

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    >>> y = torch.arange(200) % 2
    >>> g = gg.knn_graph(x + 3 * y[:, None], k=5)
    >>> r = gg.modularity_null(g, y, permutations=200)
    >>> bool(r.z > 10 and r.p == 1 / 201)
    True
    """
    codes, classes = _door(g, labels, mode, negative)
    permutations = check_count(permutations, "permutations")
    return null_of(g, codes, classes, permutations, seed, mode, weighted, resolution, negative)


def null_of(g: KnnGraph, codes: torch.Tensor, classes: int, permutations: int, seed: int = 0, mode: str = "mean",
            weighted: bool = True, resolution: float = 1.0, negative: str = "keep") -> NullModularity:
    """:func:`modularity_null` below its door, as :func:`modularity_of` is :func:`modularity`'s."""
    q = modularity_of(g, codes, classes, mode, weighted, resolution, negative)
    both, strength, two_m = edge_mass(g, mode, weighted, negative)
    rng = np.random.default_rng(seed)
    codes = codes.cpu().numpy().astype(np.min_scalar_type(max(classes - 1, 0)))
    batch = max(64, (1 << 28) // max(1, g.n * codes.itemsize) // 64 * 64)  # codes of a batch: <= 256 MB
    samples = np.empty(permutations, dtype=np.float64)
    for p0 in range(0, permutations, batch):
        count = min(batch, permutations - p0)
        # rng.permutation(codes), drawn faster as codes at a permutation of the positions
        shuffled = np.stack([codes[rng.permutation(g.n)] for _ in range(count)], axis=1)  # (N, count)
        within, class_strength = _permuted_sums(g, both, strength, shuffled, classes)
        samples[p0 : p0 + count] = within / two_m - resolution * ((class_strength / two_m) ** 2).sum(axis=1)
    mean, std = float(samples.mean()), float(samples.std(ddof=1)) if permutations > 1 else 0.0
    z = (q - mean) / std if std > 0 else float("nan")
    # q is compared with the samples within their rounding (a permutation may give the
    # labelling back; its value is then q up to the order of the sums)
    tie = 1e-12 * max(1.0, abs(q))
    p = (1 + int((samples >= q - tie).sum())) / (permutations + 1)
    return NullModularity(q=q, mean=mean, std=std, z=z, p=p, permutations=permutations, samples=samples)


def _permuted_sums(g: KnnGraph, both, strength, codes: np.ndarray, classes: int):
    """(within (P,), class strengths (P, classes)) for the labellings in the columns of
    ``codes`` (N, P): compiled on the CPU, torch elsewhere."""
    if g.device.type == "cpu":
        use_threads(g.indices.numel() * codes.shape[1])
        return _graph_cpu.permuted_sums(g.indices.contiguous().numpy(), both.contiguous().numpy(),
                                        strength.numpy(), codes, classes)
    return _permuted_sums_torch(g.indices, both, strength, torch.from_numpy(codes.astype(np.int64)).to(g.device),
                                classes)


def _permuted_sums_torch(indices, both, strength, codes, classes: int, batch: int = 32):
    """The statement in torch of :func:`gpugraph.kernels.graph_cpu.permuted_sums`."""
    count = codes.shape[1]
    within = torch.empty(count, dtype=torch.float64, device=codes.device)
    class_strength = torch.zeros((count, classes), dtype=torch.float64, device=codes.device)
    for p0 in range(0, count, batch):
        c = codes[:, p0 : p0 + batch]  # (N, b)
        within[p0 : p0 + batch] = ((c[:, None, :] == c[indices]) * both[:, :, None]).sum(dim=(0, 1))
        class_strength[p0 : p0 + batch].scatter_add_(1, c.T, strength.expand(c.shape[1], -1))
    return within.cpu().numpy(), class_strength.cpu().numpy()
