"""Modularity of a kNN graph against a labelling of its nodes."""

from __future__ import annotations

import torch

from gpugraph import _graph_cpu
from gpugraph._tensor import label_codes
from gpugraph.graph import KnnGraph, check_graph, check_mode

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
        reading as edge mass, so treat such values with care. "clip" sets negative weights to
        zero (drops those edges); "raise" refuses.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If labels do not have N entries, the total weight 2m is not positive (no edges in
        this mode, or negative weights outweigh the rest), or ``negative="raise"`` and some
        weight is negative.

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
    check_graph(g)
    if negative not in _NEGATIVE:
        raise ValueError(f"negative must be one of {_NEGATIVE}, got {negative!r}")
    check_mode(mode)
    codes, classes = label_codes(labels, g.n, g.device)
    if g.device.type == "cpu":  # one compiled pass over the edges
        recip, partner_w = g.reciprocity()
        clip = negative == "clip" and weighted
        two_m, within, class_strength, lowest = _graph_cpu.modularity_sums(
            g.indices.contiguous().numpy(), g.weights.contiguous().numpy(), recip.numpy(), partner_w.numpy(),
            codes.numpy(), len(classes), _graph_cpu.MODES[mode], weighted, clip)
        if not (negative == "raise" and weighted and lowest < 0):
            _check_mass(two_m, mode)
            return float(within / two_m - resolution * ((class_strength / two_m) ** 2).sum())
    fwd, rev = g.symmetric_weights(mode, weighted, dtype=torch.float64)  # (N, k) each
    if negative != "keep" and weighted and bool((fwd < 0).any() | (rev < 0).any()):
        if negative == "raise":
            count = int((fwd < 0).sum() + (rev < 0).sum()) // 2 or 1
            low = float(torch.minimum(fwd.min(), rev.min()))
            raise ValueError(
                f"the {mode!r} graph has {count} edges with negative cosine weight "
                f"(min {low:.3g}); pass negative='keep' (the formula as is, "
                "like networkx) or 'clip', or weighted=False"
            )
        fwd, rev = fwd.clamp(min=0.0), rev.clamp(min=0.0)
    both = fwd + rev  # all the adjacency mass edge (i, a) carries; sums to 2m
    two_m = float(both.sum())
    _check_mass(two_m, mode)
    # s_i: row i's own edges, plus the reverse halves of one-way edges pointing at i.
    strength = fwd.sum(dim=1).index_add_(0, g.indices.flatten(), rev.flatten())  # (N,)
    class_strength = torch.zeros(len(classes), dtype=torch.float64, device=g.device)
    class_strength.index_add_(0, codes, strength)
    within = (both * (codes[:, None] == codes[g.indices])).sum()
    q = within / two_m - resolution * ((class_strength / two_m) ** 2).sum()
    return float(q)


def _check_mass(two_m: float, mode: str) -> None:
    if not two_m > 0.0:
        raise ValueError(
            f"the {mode!r} graph has total weight 2m = {two_m:.3g}, so its modularity is "
            "undefined: it has no edges in this mode, or negative weights cancel the rest "
            "(try negative='clip' or weighted=False)"
        )
