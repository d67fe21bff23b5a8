import itertools

import igraph
import networkx as nx
import numpy as np
import pytest
import torch
from helpers import DEVICES, clustered, exact_knn, nx_reference_modularity, paper_adjacency
from hypothesis import given, settings
from hypothesis import strategies as st

import gpugraph as gg


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["mean", "max", "mutual"])
@pytest.mark.parametrize("weighted", [True, False])
def test_adjacency_equals_dense_construction(device, mode, weighted):
    x, _ = clustered(n=300, d=10, seed=5)
    g = gg.knn_graph(x.to(device), k=5)
    a = g.adjacency(mode, weighted)
    assert a.layout == torch.sparse_csr and a.device.type == device
    ref = paper_adjacency(x.numpy(), 5, mode, weighted)
    np.testing.assert_allclose(a.to_dense().cpu().double().numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(g.to_scipy(mode, weighted).toarray(), ref, atol=1e-6)
    col = a.col_indices().cpu()
    crow = a.crow_indices().cpu()
    for r in range(0, 300, 37):  # columns sorted within each row
        assert torch.all(col[crow[r] + 1 : crow[r + 1]] > col[crow[r] : crow[r + 1] - 1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "mode,weighted", [("mean", True), ("max", False), ("max", True), ("mutual", True), ("mean", False)]
)
@pytest.mark.parametrize("resolution", [1.0, 0.5])
def test_modularity_matches_networkx_on_the_paper_graph(device, mode, weighted, resolution):
    x, labels = clustered(n=500, d=16, classes=5, spread=1.0, seed=11)
    g = gg.knn_graph(x.to(device), k=3)
    assert np.array_equal(g.indices.cpu().numpy(), exact_knn(x.numpy(), 3)[0])
    adj = paper_adjacency(x.numpy(), 3, mode, weighted, weights=g.weights.cpu())
    ref = nx_reference_modularity(adj, labels, resolution)
    q = gg.modularity(g, labels, mode=mode, weighted=weighted, resolution=resolution)
    assert q == pytest.approx(ref, abs=1e-9)


def test_modularity_of_two_cliques_by_hand():
    # Two disjoint triangles, unweighted: m = 6, each class holds half the strength,
    # Q = 1 - 2 * (1/2)^2 = 0.5.
    idx = torch.tensor([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]])
    g = gg.KnnGraph(idx, torch.ones(6, 2))
    assert gg.modularity(g, [0, 0, 0, 1, 1, 1]) == pytest.approx(0.5, abs=1e-15)
    assert gg.modularity(g, [0] * 6) == pytest.approx(0.0, abs=1e-15)
    # One-way edges of the mean graph count half: chain 0 -> 1 one way only.
    g = gg.KnnGraph(torch.tensor([[1], [2], [1]]), torch.ones(3, 1))
    # A: (0,1) = 1/2, (1,2) = 1; 2m = 3; strengths 1/2, 3/2, 1.
    expected = (2 * 1.0) / 3 - ((0.5 + 1.5 + 1.0) / 3) ** 2 * 0 - (1.5 + 1.0) ** 2 / 9 - 0.25 / 9
    assert gg.modularity(g, ["a", "b", "b"]) == pytest.approx(expected, abs=1e-15)


def test_modularity_is_igraph_modularity():
    x, labels = clustered(n=400, d=12, seed=2)
    g = gg.knn_graph(x, k=4)
    coo = g.to_scipy().tocoo()
    upper = coo.row < coo.col
    ig = igraph.Graph(n=400, edges=list(zip(coo.row[upper], coo.col[upper], strict=True)))
    ref = ig.modularity(labels.tolist(), weights=coo.data[upper].tolist())
    assert gg.modularity(g, labels) == pytest.approx(ref, abs=1e-9)


def test_labels_may_be_strings_tensors_and_arrays():
    x, labels = clustered(n=200, d=8, seed=4)
    g = gg.knn_graph(x, k=3)
    q = gg.modularity(g, labels)
    names = np.array(["ant", "bee", "cat", "dog"])[labels]
    assert gg.modularity(g, names.tolist()) == pytest.approx(q, abs=1e-12)
    assert gg.modularity(g, torch.from_numpy(labels)) == pytest.approx(q, abs=1e-12)
    assert gg.modularity(g, [(int(c), "x") for c in labels]) == pytest.approx(q, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("spread", [3, 100, 2**40])
def test_integer_label_codes_are_numpys_unique(dtype, spread):
    # small ranges go through a table (bincount), wide ones through a sort: both must give
    # np.unique's sorted classes and inverse, whatever the dtype (int8 -100..100 must not wrap)
    from gpugraph._util.convert import label_codes

    rng = np.random.default_rng(spread)
    info = np.iinfo(dtype)
    low, high = max(info.min, -spread), min(info.max, spread)
    labels = rng.integers(low, high, size=300, endpoint=True).astype(dtype)
    labels[:2] = low, high
    classes, inverse = np.unique(labels, return_inverse=True)
    for passed in (
        labels,
        torch.from_numpy(labels.astype(np.int64)) if dtype == np.uint64 else torch.from_numpy(labels),
    ):
        codes, names = label_codes(passed, 300, torch.device("cpu"))
        assert names == classes.tolist()
        assert codes.dtype == torch.int64 and codes.tolist() == inverse.tolist()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), k=st.integers(1, 5))
def test_list_faults_compiled_and_torch_agree(seed, n, k):
    # the CPU's compiled check and the torch passes used on other devices find the same
    # first offending node of each kind, against a plain Python scan
    from gpugraph.graph.knngraph import _list_faults

    rng = np.random.default_rng(seed)
    indices = rng.integers(-2, n + 1, size=(n, k))  # -1: an empty slot, allowed (and repeated)
    expected = []
    for bad in (
        lambda i, row: any(j < -1 or j >= n for j in row),
        lambda i, row: i in row,
        lambda i, row: len([j for j in row if j >= 0]) > len({j for j in row if j >= 0}),
    ):
        expected.append(next((i for i, row in enumerate(indices.tolist()) if bad(i, row)), -1))
    t = torch.from_numpy(indices)
    assert _list_faults(t, compiled=True) == tuple(expected)
    assert _list_faults(t, compiled=False) == tuple(expected)


@settings(max_examples=25, deadline=None)
@given(perm_seed=st.integers(0, 2**31), n_classes=st.integers(1, 6))
def test_modularity_is_invariant_to_renaming_classes(perm_seed, n_classes):
    rng = np.random.default_rng(perm_seed)
    x, _ = clustered(n=120, d=6, seed=9)
    labels = rng.integers(0, n_classes, size=120)
    g = gg.knn_graph(x, k=3)
    renamed = rng.permutation(50)[labels] * 7 - 3
    assert gg.modularity(g, renamed) == pytest.approx(gg.modularity(g, labels), abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_modularity_is_invariant_to_renumbering_nodes(seed):
    rng = np.random.default_rng(seed)
    x, labels = clustered(n=150, d=6, seed=3)
    perm = rng.permutation(150)
    q = gg.modularity(gg.knn_graph(x, k=4), labels)
    q_perm = gg.modularity(gg.knn_graph(x[perm], k=4), labels[perm])
    assert q_perm == pytest.approx(q, abs=1e-9)


def test_negative_weights_keep_clip_or_raise():
    idx = torch.tensor([[1, 2], [0, 2], [0, 1], [4, 0], [3, 5], [3, 4]])
    w = torch.tensor([[0.9, 0.2], [0.9, 0.3], [0.2, 0.3], [0.8, -0.4], [0.8, 0.7], [0.6, 0.7]])
    g = gg.KnnGraph(idx, w)
    labels = np.array([0, 0, 0, 1, 1, 1])
    adj = g.to_scipy("mean").toarray()
    assert adj.min() < 0
    # "keep" is the formula as is: networkx on the same signed graph.
    ref = nx_reference_modularity(adj, labels)
    assert gg.modularity(g, labels) == pytest.approx(ref, abs=1e-12)
    # "clip" is the graph without its negative edge.
    ref_clip = nx_reference_modularity(np.clip(adj, 0, None), labels)
    assert gg.modularity(g, labels, negative="clip") == pytest.approx(ref_clip, abs=1e-12)
    with pytest.raises(ValueError, match=r"1 directed edges with negative weight \(min -0.4\)"):
        gg.modularity(g, labels, negative="raise")
    assert gg.modularity(g, labels, negative="raise", weighted=False) == pytest.approx(
        nx_reference_modularity((adj != 0).astype(float), labels), abs=1e-12
    )
    with pytest.raises(ValueError, match="negative must be one of"):
        gg.modularity(g, labels, negative="drop")
    g = gg.KnnGraph(torch.tensor([[1], [0]]), torch.tensor([[-0.5], [-0.5]]))
    with pytest.raises(ValueError, match=r"total weight 2m = -1, so its modularity is undefined"):
        gg.modularity(g, [0, 1])


@pytest.mark.parametrize("mode", ["mean", "max", "mutual"])
def test_clip_acts_on_the_directed_weights_before_symmetrising(mode):
    # a reciprocal pair with weights of opposite sign: clipping the symmetrised entry (the
    # old reading) left 0 + 0 = 2m = 0; the documented rule clips W first: A = sym(max(W, 0))
    idx = torch.tensor([[1, 2], [0, 2], [1, 3], [2, 0]])
    w = torch.tensor([[0.5, 0.4], [-0.5, 0.3], [0.6, 0.2], [0.7, 0.1]])
    g = gg.KnnGraph(idx, w)
    labels = np.array([0, 0, 1, 1])
    wc = np.zeros((4, 4))  # the clipped directed weights, written out
    for i in range(4):
        for a in range(2):
            wc[i, idx[i, a]] = max(float(w[i, a]), 0.0)
    listed = np.zeros((4, 4), dtype=bool)
    listed[np.repeat(np.arange(4), 2), idx.flatten().numpy()] = True
    both = listed & listed.T
    if mode == "mean":
        adj = (wc + wc.T) / 2
    elif mode == "max":
        adj = np.where(listed | listed.T, np.maximum(wc, wc.T), 0.0)
    else:
        adj = np.where(both, (wc + wc.T) / 2, 0.0)
    want = nx_reference_modularity(adj, labels)
    assert gg.modularity(g, labels, mode=mode, negative="clip") == pytest.approx(want, abs=1e-12)
    assert float(gg.modularity_null(g, labels, permutations=3, mode=mode, negative="clip").q) == pytest.approx(
        want, abs=1e-12
    )
    with pytest.raises(ValueError, match=r"1 directed edges with negative weight \(min -0.5\)"):
        gg.modularity(g, labels, mode=mode, negative="raise")


def test_modularity_errors():
    g = gg.KnnGraph(torch.tensor([[1], [2], [0]]), torch.ones(3, 1))
    with pytest.raises(ValueError, match=r"one entry per node: expected 3, got 2"):
        gg.modularity(g, [0, 1])
    with pytest.raises(ValueError, match=r"expected shape \(3,\), got \(2,\)"):
        gg.modularity(g, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"labels of dtype float64 must be whole numbers .* got 0.5 at entry 0; .* bin"):
        gg.modularity(g, np.array([0.5, 1.0, 2.0]))
    with pytest.raises(TypeError, match=r"labels of dtype torch.float32 must be whole numbers .* got nan at entry 2"):
        gg.modularity(g, torch.tensor([0.0, 1.0, float("nan")]))
    with pytest.raises(TypeError, match="labels must be integers or other exact values, got dtype complex128"):
        gg.modularity(g, np.array([0, 1, 1j]))
    with pytest.raises(TypeError, match="single string"):
        gg.modularity(g, "abc")
    with pytest.raises(ValueError, match="'mutual' graph has total weight 2m = 0"):
        gg.modularity(g, [0, 1, 1], mode="mutual")
    with pytest.raises(TypeError, match="g must be a KnnGraph"):
        gg.modularity(np.eye(3), [0, 1, 1])


def test_networkx_and_scipy_views_agree():
    x, _ = clustered(n=100, d=5, seed=8)
    g = gg.knn_graph(x, k=3)
    nxg = g.to_networkx("max", weighted=False)
    assert nxg.number_of_nodes() == 100
    np.testing.assert_array_equal(nx.to_numpy_array(nxg, nodelist=range(100)), g.to_scipy("max", False).toarray())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,k", [(200, 3), (600, 8), (1500, 12), (600, 40)])  # k = 40: rows past 32 (two sorts)
def test_triangles_match_networkx_and_igraph(device, n, k):
    x, _ = clustered(n=n, d=6, seed=n)
    g = gg.knn_graph(x.to(device), k=k)
    union = g.to_networkx("max", weighted=False)
    per_node = nx.triangles(union)
    assert gg.triangles(g) == sum(per_node.values()) // 3
    coo = g.to_scipy("max", False).tocoo()
    upper = coo.row < coo.col
    assert gg.triangles(g) == len(
        igraph.Graph(n=n, edges=list(zip(coo.row[upper], coo.col[upper], strict=True))).list_triangles()
    )
    counts = gg.triangles(g, per_node=True)
    assert counts.device.type == device and counts.dtype == torch.int64
    assert counts.cpu().tolist() == [per_node[i] for i in range(n)]


def brute_force_motifs(adj, labels):
    n = len(adj)
    out = {"same": 0, "pair": 0, "distinct": 0}
    for a, b, c in itertools.combinations(range(n), 3):
        if adj[a, b] and adj[b, c] and adj[a, c]:
            kinds = len({labels[a], labels[b], labels[c]})
            out[{1: "same", 2: "pair", 3: "distinct"}[kinds]] += 1
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_motifs_match_brute_force_enumeration(device, seed):
    x, labels = clustered(n=60, d=4, classes=3, spread=1.5, seed=seed)
    g = gg.knn_graph(x.to(device), k=6)
    ref = brute_force_motifs(g.to_scipy("max", False).toarray() > 0, labels)
    got = gg.motifs(g, labels)
    assert got == ref and sum(got.values()) == gg.triangles(g)
    assert gg.motifs(g, np.array(["a", "b", "c"])[labels].tolist()) == ref


def test_motifs_hand_example():
    # Two triangles sharing edge (1, 2): {0, 1, 2} and {1, 2, 3}.
    idx = torch.tensor([[1, 2], [0, 2], [0, 1], [1, 2]])
    g = gg.KnnGraph(idx, torch.ones(4, 2))
    assert gg.motifs(g, [0, 0, 0, 1]) == {"same": 1, "pair": 1, "distinct": 0}
    assert gg.motifs(g, [0, 1, 2, 1]) == {"same": 0, "pair": 1, "distinct": 1}
    assert gg.triangles(g, per_node=True).tolist() == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="expected 4, got 3"):
        gg.motifs(g, [0, 1, 2])


@pytest.mark.parametrize("device", DEVICES)
def test_knn_overlap_is_mean_jaccard(device):
    a, _ = clustered(n=300, d=8, seed=1)
    b = a + 0.5 * torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    g1, g2 = gg.knn_graph(a.to(device), k=5), gg.knn_graph(b.to(device), k=8)
    s1 = [set(r) for r in g1.indices.cpu().tolist()]
    s2 = [set(r) for r in g2.indices.cpu().tolist()]
    ref = np.mean([len(p & q) / len(p | q) for p, q in zip(s1, s2, strict=True)])
    assert gg.knn_overlap(g1, g2) == pytest.approx(ref, abs=1e-12)
    assert gg.knn_overlap(g1, g1) == 1.0


def test_knn_overlap_errors():
    g1 = gg.knn_graph(torch.randn(10, 3), k=2)
    g2 = gg.knn_graph(torch.randn(12, 3), k=2)
    with pytest.raises(ValueError, match="same nodes: g1 has N=10, g2 has N=12"):
        gg.knn_overlap(g1, g2)
    with pytest.raises(
        TypeError, match=r"knn_overlap: b must be a KnnGraph, an .N, D. tensor or array, or an .npy path, got str"
    ):
        gg.knn_overlap(g1, "graph")
    with pytest.raises(ValueError, match="same samples: a has N=10, b has N=12"):
        gg.knn_overlap(g1, torch.randn(12, 3))
    with pytest.raises(ValueError, match="k=3 was passed, but both arguments are graphs already"):
        gg.knn_overlap(g1, g1, k=3)
    with pytest.raises(ValueError, match="one k; got graphs with k=2 and k=3"):
        gg.mutual_knn(g1, gg.knn_graph(torch.randn(10, 3), k=3))


def test_a_graph_cannot_be_reassigned_and_in_place_edits_refresh_its_cache():
    x, labels = clustered(n=120, d=5, classes=3, seed=3)
    g = gg.knn_graph(x, k=4)
    for name in ("indices", "weights", "n"):
        with pytest.raises(AttributeError, match=f"KnnGraph is immutable: cannot set '{name}'"):
            setattr(g, name, None)
    before = gg.modularity(g, labels, mode="max")  # caches the reciprocity of the edges
    g.weights.mul_(0.5).add_(0.25)  # an in-place edit of the array itself
    g.indices[0] = g.indices[0].flip(0)
    g.indices[5, 0] = (
        int(g.indices[6, 0]) if int(g.indices[6, 0]) not in (5, *g.indices[5].tolist()) else int(g.indices[5, 0])
    )
    ref = nx_reference_modularity(g.to_scipy("max").toarray(), labels)
    assert gg.modularity(g, labels, mode="max") == pytest.approx(ref, abs=1e-9) and ref != pytest.approx(before)
    recip, _ = g.reciprocity()
    lists = [set(r) for r in g.indices.tolist()]
    assert recip.tolist() == [[i in lists[j] for j in row] for i, row in enumerate(g.indices.tolist())]


def test_a_user_built_graph_owns_its_arrays():
    idx = np.array([[1], [0], [3], [2]])
    w = np.ones((4, 1), dtype=np.float32)
    g = gg.KnnGraph(idx, w)
    assert gg.modularity(g, [0, 0, 1, 1]) == 0.5
    idx[:] = [[2], [3], [0], [1]]  # the caller's array changes; the graph does not
    w[:] = 7
    assert g.indices.flatten().tolist() == [1, 0, 3, 2] and gg.modularity(g, [0, 0, 1, 1]) == 0.5


def test_public_edge_views_agree_with_the_adjacency():
    x, _ = clustered(n=80, d=4, seed=6)
    g = gg.knn_graph(x, k=3)
    for mode in ("mean", "max", "mutual"):
        rows, cols, vals = g.edges(mode)
        dense = np.zeros((80, 80))
        dense[rows.numpy(), cols.numpy()] = vals.numpy()
        np.testing.assert_allclose(dense, paper_adjacency(x.numpy(), 3, mode, weights=g.weights.numpy()), atol=1e-12)
        fwd, rev = g.symmetric_weights(mode)
        assert float(fwd.sum() + rev.sum()) == pytest.approx(dense.sum(), abs=1e-9)


@pytest.mark.parametrize(
    "indices,match",
    [
        (
            torch.zeros((5, 0), dtype=torch.int64),
            r"at least one node and one neighbour per node, got indices of shape \(5, 0\)",
        ),
        (torch.zeros((0, 2), dtype=torch.int64), r"got indices of shape \(0, 2\)"),
    ],
)
def test_an_empty_graph_is_refused(indices, match):
    with pytest.raises(ValueError, match=match):
        gg.KnnGraph(indices, torch.zeros(indices.shape))


@pytest.mark.parametrize("kind", ["numpy str", "numpy object", "list", "pandas"])
def test_string_labels_work_in_every_measure(kind):
    pd = pytest.importorskip("pandas")
    x, labels = clustered(n=90, d=4, classes=3, seed=2)
    names = np.array(["cat", "dog", "emu"])[labels]
    given = {
        "numpy str": names,
        "numpy object": names.astype(object),
        "list": names.tolist(),
        "pandas": pd.Series(names),
    }[kind]
    g = gg.knn_graph(x, k=5)
    assert gg.modularity(g, given) == pytest.approx(gg.modularity(g, labels), abs=1e-15)
    assert gg.motifs(g, given) == gg.motifs(g, labels)
    curve = gg.modularity_curve({"x": x}, given, k=3, n=30, repeats=2)
    np.testing.assert_allclose(
        curve.values, gg.modularity_curve({"x": x}, labels, k=3, n=30, repeats=2).values, atol=1e-12
    )


@pytest.mark.parametrize(
    "labels,error,match",
    [
        (
            [[1, 0], [0, 1], [1, 0]],
            TypeError,
            r"hashable values .* type list: \[1, 0\]; for one-hot rows pass their argmax",
        ),
        (
            np.eye(3, dtype=int),
            ValueError,
            r"labels must be 1-D.* got \(3, 3\); one-hot labels: pass labels.argmax\(1\)",
        ),
        ([{1}, {2}, {3}], ValueError, r"the partition names node 3; this graph's nodes are 0..2"),  # sets: a partition
    ],
)
def test_labels_of_the_wrong_shape_or_kind_are_refused_clearly(labels, error, match):
    g = gg.KnnGraph(torch.tensor([[1], [2], [0]]), torch.ones(3, 1))
    with pytest.raises(error, match=match):
        gg.modularity(g, labels)


def test_triangle_counts_are_exact_whatever_the_split_of_the_rows():
    from gpugraph.graph.edges import edge_rows
    from gpugraph.graph.motifs import oriented_csr
    from gpugraph.kernels import graph_cpu as _graph_cpu

    x, labels = clustered(n=400, d=4, classes=3, spread=1.2, seed=9)
    g = gg.knn_graph(x, k=7)
    union = g.to_networkx("max", weighted=False)
    per_node = nx.triangles(union)
    ref = brute_force_motifs(nx.to_numpy_array(union, nodelist=range(400)) > 0, labels)
    indptr, cols = (t.numpy() for t in oriented_csr(edge_rows(g, "max")))
    codes = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    for chunks in (1, 3, 7, 400):  # the work split between threads, down to a row each
        total, nodes, kinds = _graph_cpu.count(indptr, cols, codes, True, True, 0, 400, chunks)
        assert total == sum(per_node.values()) // 3
        assert nodes.tolist() == [per_node[i] for i in range(400)]
        assert dict(zip(("same", "pair", "distinct"), kinds.tolist(), strict=True)) == ref
    # shares of the rows (as the ranks of a distributed count take them) add up to the whole
    shares = [
        _graph_cpu.count(indptr, cols, codes, False, False, r0, r1, 2)[0]
        for r0, r1 in ((0, 130), (130, 131), (131, 400))
    ]
    assert sum(shares) == sum(per_node.values()) // 3


def test_an_edit_torch_does_not_count_is_still_seen_by_the_cache():
    # edits through a NumPy view or .data do not bump torch's version counter; the old cache
    # then answered from the old graph (0.25 where a fresh graph gives 0.21875)
    labels = [0, 0, 1, 1]
    for edit in ("numpy", "data"):
        g = gg.KnnGraph(torch.tensor([[1], [0], [3], [2]]), torch.ones(4, 1))
        assert gg.modularity(g, labels, mode="max") == 0.5  # "max" reads the cached reciprocity
        if edit == "numpy":
            g.indices.numpy()[1, 0] = 2
        else:
            g.weights.data[0, 0] = 0.5
        fresh = gg.KnnGraph(g.indices.clone(), g.weights.clone())
        want = nx_reference_modularity(fresh.to_scipy("max").toarray(), np.array(labels))
        assert gg.modularity(fresh, labels, mode="max") == pytest.approx(want, abs=1e-12)
        assert gg.modularity(g, labels, mode="max") == pytest.approx(want, abs=1e-12)
        assert gg.triangles(g) == gg.triangles(fresh)


def test_the_fingerprint_sees_one_flipped_bit_and_a_swap():
    from gpugraph.graph.knngraph import _fingerprint_torch
    from gpugraph.kernels import graph_cpu as _graph_cpu

    rng = np.random.default_rng(0)
    idx = rng.integers(0, 1000, size=(100, 7))
    w = rng.random((100, 7)).astype(np.float32)
    for fp in (
        lambda i, v: _graph_cpu.fingerprint(i, v),
        lambda i, v: _fingerprint_torch(torch.from_numpy(i), torch.from_numpy(v)),
    ):
        base = fp(idx, w)
        assert fp(idx.copy(), w.copy()) == base
        flipped = w.copy()
        flipped.view(np.uint32)[3, 4] ^= 1
        swapped = idx.copy()
        swapped[[5, 6], 2] = swapped[[6, 5], 2]
        assert fp(idx, flipped) != base
        assert idx[5, 2] == idx[6, 2] or fp(swapped, w) != base
        half = w[:7, :5].astype(np.float16)  # an odd number (35) of 2-byte weights
        edited = half.copy()
        edited[3, 3] = -edited[3, 3]
        assert fp(idx[:7, :5], half) != fp(idx[:7, :5], edited)


def test_converters_carry_the_exact_means_of_float32_weights():
    # (w + w') / 2 of two float32 weights is exact in float64 but not in float32: the
    # converters used to build float32 means, 1e-8 off what the measures sum
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(200, 5)).astype(np.float32))
    g = gg.knn_graph(x, k=6)
    w = g.weights.double().numpy()
    idx = g.indices.numpy()
    dense = np.zeros((200, 200))
    for i in range(200):
        for a in range(6):
            j = idx[i, a]
            dense[i, j] += w[i, a] / 2
            dense[j, i] += w[i, a] / 2
    labels = rng.integers(0, 3, 200)
    for a in (g.to_scipy(), g.adjacency().to_dense().numpy(), nx.to_numpy_array(g.to_networkx(), nodelist=range(200))):
        assert a.dtype == np.float64
        np.testing.assert_array_equal(a.toarray() if hasattr(a, "toarray") else a, dense)
    assert gg.modularity(g, labels) == pytest.approx(nx_reference_modularity(dense, labels), abs=1e-12)


def test_whole_number_float_labels_are_classes():
    """Class ids saved as floats (y.float(), an .npz of float32 labels) give the modularity
    of the integer labels, on every input form."""
    x, labels = clustered(n=200, d=8, classes=4, seed=5)
    g = gg.knn_graph(x, k=5)
    want = gg.modularity(g, labels)
    for floats in (torch.tensor(labels).float(), labels.astype(np.float32), labels.astype(np.float64).tolist()):
        assert gg.modularity(g, floats) == want
    assert gg.motifs(g, torch.tensor(labels).double()) == gg.motifs(g, labels)
