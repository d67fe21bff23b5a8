"""Modularity of a graph (kNN lists or any Graph) against a labelling of its nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from gpugraph._util.errors import check_count
from gpugraph._util.types import Labels
from gpugraph.graph.edges import check_any_graph, edge_rows, node_codes
from gpugraph.graph.graph import Graph
from gpugraph.graph.knngraph import check_mode
from gpugraph.kernels import graph_cpu as _graph_cpu

if TYPE_CHECKING:
    from gpugraph.graph.knngraph import KnnGraph


_NEGATIVE = ("keep", "clip", "raise")


def modularity(
    g: KnnGraph | Graph,
    labels: Labels,
    mode: str | None = None,
    weighted: bool = True,
    resolution: float = 1.0,
    negative: str = "keep",
) -> float:
    """Modularity of a graph under ``labels``.

    For an undirected graph (a :class:`KnnGraph` symmetrised by ``mode``, or an undirected
    :class:`Graph`) with adjacency A:
    Q = 1/(2m) * sum_ij [A_ij - resolution * s_i s_j / (2m)] * delta(c_i, c_j), with
    s_i = sum_j A_ij the strength of node i and 2m = sum_ij A_ij. For a directed Graph, the
    directed modularity of Leicht and Newman,
    Q = 1/m * sum_ij [A_ij - resolution * s_i^out s_j^in / m] * delta(c_i, c_j), with
    m = sum_ij A_ij. These are what ``networkx.algorithms.community.modularity`` returns on
    the same weighted Graph or DiGraph, and with a KnnGraph in ``mode="mean"`` the layer
    modularity of Lu et al. (2022).

    Computed in the form Q = L_in / M - resolution * sum_c S_c^out S_c^in / M^2 (M = 2m,
    or m when directed), where L_in sums A_ij over ordered same-class pairs and S_c the
    strengths of class c, from the graph's edges in float64 without building a matrix.

    Parameters
    ----------
    g : KnnGraph or Graph
    labels : N hashable values (ints, strings, ...), or a partition
        The community of each node; or the communities themselves, as networkx's community
        functions return them: an iterable of sets (or of lists, when there are not N of
        them) of nodes, every node in exactly one (nodes by :attr:`Graph.names` for a graph
        from networkx, else by index).
    mode : {"mean", "max", "mutual"}, optional
        How the directed lists of a KnnGraph are symmetrised (default "mean"); see
        :class:`KnnGraph`. A Graph is used as it is: build it undirected or directed, or
        take ``knn.to_graph(mode)`` (``mode="directed"`` for the lists as they are).
    weighted : bool
        Use the weights (True) or 1 for every edge (False).
    resolution : float
        The resolution parameter gamma; 1 is the classical modularity.
    negative : {"keep", "clip", "raise"}
        What to do with negative weights (possible between centred or low-dimensional
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
        If labels do not have N entries (or a partition misses or repeats a node), the total
        weight is not positive (no edges, or negative weights outweigh the rest),
        ``negative="raise"`` and some weight is negative, or a ``mode`` is given with a Graph.

    Notes
    -----
    O(E) time and O(N + E) memory (E = N k for a KnnGraph).

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> g = gg.KnnGraph(torch.tensor([[1], [0], [3], [2]]), torch.ones(4, 1))
    >>> gg.modularity(g, [0, 0, 1, 1])
    0.5
    >>> gg.modularity(g.to_graph(), [{0, 1}, {2, 3}])
    0.5

    References
    ----------
    M. E. J. Newman, "Networks: An Introduction", Oxford University Press (2010), eq. 7.76.
    E. A. Leicht and M. E. J. Newman, "Community structure in directed networks", Phys. Rev.
    Lett. 100, 118703 (2008).
    H. Lu et al., "Understanding the Dynamics of DNNs Using Graph Modularity", ECCV 2022,
    doi:10.1007/978-3-031-19775-8_14.
    """
    codes, classes = _door(g, labels, mode, negative)
    return modularity_of(g, codes, classes, mode, weighted, resolution, negative)


def _door(g, labels, mode: str | None, negative: str) -> tuple[torch.Tensor, int]:
    """Check a graph and the options of a modularity; the labels as int64 codes on g's
    device, and the number of classes."""
    check_any_graph(g)
    check_options(mode, negative, g)
    return node_codes(g, labels)


def check_options(mode: str | None, negative: str, g=None) -> None:
    """Refuse an unknown symmetrisation ``mode`` (or one given with a Graph) or ``negative``
    policy."""
    if negative not in _NEGATIVE:
        raise ValueError(f"negative must be one of {_NEGATIVE}, got {negative!r}")
    if isinstance(g, Graph):
        edge_rows(g, mode)  # refuses a mode
    elif mode is not None:
        check_mode(mode)


def modularity_of(
    g,
    codes: torch.Tensor,
    classes: int,
    mode: str | None = None,
    weighted: bool = True,
    resolution: float = 1.0,
    negative: str = "keep",
) -> float:
    """:func:`modularity` below its door: a checked graph, int64 ``codes`` in 0..classes-1
    on its device, valid options (the studies that check their inputs once call this)."""
    edges = edge_rows(g, mode)
    clip = negative == "clip" and weighted
    if edges.device.type == "cpu":  # one compiled pass over the edges
        csr = (edges.rows.numpy(), edges.cols.contiguous().numpy(), edges.weights.contiguous().numpy())
        if edges.mode == "mean" and weighted:  # the directed weights suffice
            sums = _graph_cpu.mean_sums(*csr, codes.numpy(), classes, clip)
        else:
            pairs = (edges.recip.contiguous().numpy(), edges.partner.contiguous().numpy())
            mode_code = _graph_cpu.MODES[edges.mode]
            sums = _graph_cpu.modularity_sums(
                *csr, *pairs, codes.numpy(), classes, mode_code, weighted, clip, edges.directed
            )
        total, within, s_out, s_in, lowest = sums
        s_out, s_in = torch.from_numpy(s_out), torch.from_numpy(s_in)
    else:
        total, within, s_out, s_in, lowest = _sums_torch(edges, codes, classes, weighted, clip)
    if negative == "raise" and weighted and lowest < 0:
        raise ValueError(_negative_message(edges))
    _check_mass(total, edges)
    return float(within / total - resolution * float((s_out * s_in).sum()) / total**2)


def _sums_torch(edges, codes: torch.Tensor, classes: int, weighted: bool, clip: bool):
    """The statement in torch of :func:`gpugraph.kernels.graph_cpu.modularity_sums` (and of
    its :func:`~gpugraph.kernels.graph_cpu.mean_sums`, with no reverse edges, in "mean" mode)."""
    src, dst = edges.sources(), edges.cols.clamp(min=0)  # an empty slot carries 0
    present = edges.cols >= 0
    same = codes[src] == codes[dst]
    if edges.mode == "mean" and weighted:  # A = (W + W^T) / 2: sums of the directed weights W
        w = torch.where(present, edges.weights.to(torch.float64), 0.0)
        w = w.clamp(min=0.0) if clip else w
        total, within = float(w.sum()), float((w * same).sum())
        twice = torch.zeros(classes, dtype=torch.float64, device=codes.device)
        s_out = s_in = twice.index_add_(0, codes[src], w).index_add_(0, codes[dst], w) / 2
    else:
        both, node_out, node_in, total = _mass(edges, weighted, clip)
        within = float((both * same).sum())
        s_out = torch.zeros(classes, dtype=torch.float64, device=codes.device).index_add_(0, codes, node_out)
        s_in = torch.zeros(classes, dtype=torch.float64, device=codes.device).index_add_(0, codes, node_in)
    lowest = float(edges.weights[present].min()) if bool(present.any()) else 0.0
    return total, within, s_out, s_in, lowest


def edge_mass(g, mode: str | None, weighted: bool, negative: str):
    """The adjacency's mass in float64: ``both`` (E,), all of A_ij + A_ji that edge e = i -> j
    carries (0 at an empty slot); the nodes' out- and in-strengths (N,) each (equal when A is
    symmetric); the total mass. Negative weights as :func:`modularity`'s ``negative`` says."""
    return _edge_mass(edge_rows(g, mode), weighted, negative)


def _edge_mass(edges, weighted: bool, negative: str):
    if negative == "raise" and weighted:
        present = edges.cols >= 0
        if bool((edges.weights[present] < 0).any()):
            raise ValueError(_negative_message(edges))
    both, s_out, s_in, total = _mass(edges, weighted, negative == "clip" and weighted)
    _check_mass(total, edges)
    return both, s_out, s_in, total


def _mass(edges, weighted: bool, clip: bool):
    fwd, rev = edges.mass(weighted, clip)  # (E,) each
    src, dst = edges.sources(), edges.cols.clamp(min=0)  # an empty slot carries 0
    n = edges.n
    # s_i: the edges leaving i, plus the reverse halves of one-way edges pointing at i
    s_out = torch.zeros(n, dtype=torch.float64, device=edges.device).index_add_(0, src, fwd).index_add_(0, dst, rev)
    s_in = torch.zeros(n, dtype=torch.float64, device=edges.device).index_add_(0, dst, fwd).index_add_(0, src, rev)
    both = fwd + rev
    return both, s_out, s_in, float(both.sum())


def _negative_message(edges) -> str:
    present = edges.cols >= 0
    w = edges.weights[present]
    return (
        f"the graph has {int((w < 0).sum())} directed edges with negative weight (min "
        f"{float(w.min()):.3g}); pass negative='keep' (the formula as is, like networkx) "
        "or 'clip', or weighted=False"
    )


def _check_mass(total: float, edges) -> None:
    if not total > 0.0:
        what = f"the {edges.mode!r} graph" if edges.mode != "as is" else "the graph"
        mass = "m" if edges.directed else "2m"
        raise ValueError(
            f"{what} has total weight {mass} = {total:.3g}, so its modularity is "
            "undefined: it has no edges, or negative weights cancel the rest "
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

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.cat([torch.randn(50, 4) + 4, torch.randn(50, 4) - 4])
    >>> r = gg.modularity_null(gg.knn_graph(x, k=5), [0] * 50 + [1] * 50, permutations=99)
    >>> r.permutations, r.p, bool(r.z > 5)          # the null never reaches the true labels' value
    (99, 0.01, True)
    """

    q: float
    mean: float
    std: float
    z: float
    p: float
    permutations: int
    samples: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "q": self.q,
            "mean": self.mean,
            "std": self.std,
            "z": self.z,
            "p": self.p,
            "permutations": self.permutations,
        }


def modularity_null(
    g: KnnGraph | Graph,
    labels: Labels,
    permutations: int = 1000,
    seed: int = 0,
    *,
    mode: str | None = None,
    weighted: bool = True,
    resolution: float = 1.0,
    negative: str = "keep",
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


def null_of(
    g,
    codes: torch.Tensor,
    classes: int,
    permutations: int,
    seed: int = 0,
    mode: str | None = None,
    weighted: bool = True,
    resolution: float = 1.0,
    negative: str = "keep",
) -> NullModularity:
    """:func:`modularity_null` below its door, as :func:`modularity_of` is :func:`modularity`'s."""
    q = modularity_of(g, codes, classes, mode, weighted, resolution, negative)
    edges = edge_rows(g, mode)
    both, s_out, s_in, total = _edge_mass(edges, weighted, negative)
    rng = np.random.default_rng(seed)
    small = codes.cpu().numpy().astype(np.min_scalar_type(max(classes - 1, 0)))
    batch = max(64, (1 << 28) // max(1, g.n * small.itemsize) // 64 * 64)  # codes of a batch: <= 256 MB
    samples = np.empty(permutations, dtype=np.float64)
    for p0 in range(0, permutations, batch):
        count = min(batch, permutations - p0)
        # rng.permutation(small), drawn faster as the codes at a permutation of the positions
        shuffled = np.stack([small[rng.permutation(g.n)] for _ in range(count)], axis=1)  # (N, count)
        within, class_out, class_in = _permuted_sums(edges, both, s_out, s_in, shuffled, classes)
        samples[p0 : p0 + count] = within / total - resolution * (class_out * class_in).sum(axis=1) / total**2
    mean, std = float(samples.mean()), float(samples.std(ddof=1)) if permutations > 1 else 0.0
    z = (q - mean) / std if std > 0 else float("nan")
    # q is compared with the samples within their rounding (a permutation may give the
    # labelling back; its value is then q up to the order of the sums)
    tie = 1e-12 * max(1.0, abs(q))
    p = (1 + int((samples >= q - tie).sum())) / (permutations + 1)
    return NullModularity(q=q, mean=mean, std=std, z=z, p=p, permutations=permutations, samples=samples)


def _permuted_sums(edges, both, s_out, s_in, codes: np.ndarray, classes: int):
    """(within (P,), class out- and in-strengths (P, classes) each) for the labellings in
    the columns of ``codes`` (N, P): compiled on the CPU, torch elsewhere."""
    if edges.device.type == "cpu":
        return _graph_cpu.permuted_sums(
            edges.rows.numpy(),
            edges.cols.contiguous().numpy(),
            both.contiguous().numpy(),
            s_out.numpy(),
            s_in.numpy(),
            codes,
            classes,
        )
    return _permuted_sums_torch(
        edges, both, s_out, s_in, torch.from_numpy(codes.astype(np.int64)).to(edges.device), classes
    )


def _permuted_sums_torch(edges, both, s_out, s_in, codes, classes: int, batch: int = 32):
    """The statement in torch of :func:`gpugraph.kernels.graph_cpu.permuted_sums`."""
    count = codes.shape[1]
    src, dst = edges.sources(), edges.cols.clamp(min=0)  # an empty slot carries 0 in ``both``
    within = torch.empty(count, dtype=torch.float64, device=codes.device)
    class_out = torch.zeros((count, classes), dtype=torch.float64, device=codes.device)
    class_in = torch.zeros((count, classes), dtype=torch.float64, device=codes.device)
    for p0 in range(0, count, batch):
        c = codes[:, p0 : p0 + batch]  # (N, b)
        within[p0 : p0 + batch] = ((c[src] == c[dst]) * both[:, None]).sum(dim=0)
        class_out[p0 : p0 + batch].scatter_add_(1, c.T, s_out.expand(c.shape[1], -1))
        class_in[p0 : p0 + batch].scatter_add_(1, c.T, s_in.expand(c.shape[1], -1))
    return within.cpu().numpy(), class_out.cpu().numpy(), class_in.cpu().numpy()
