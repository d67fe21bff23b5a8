"""The measures on any graph (gg.Graph) and on kNN lists with empty slots (-1), against
networkx and igraph on the graphs they ship and on seeded random graphs."""

import igraph
import networkx as nx
import numpy as np
import pytest
import scipy.sparse
import torch
from networkx.algorithms import community

import gpugraph as gg

SHIPPED = {  # networkx's own graphs
    "karate": nx.karate_club_graph,  # weighted ("weight": interactions), 34 nodes, 45 triangles
    "kite": nx.krackhardt_kite_graph,
    "les_miserables": nx.les_miserables_graph,  # weighted, nodes named by strings
    "florentine": nx.florentine_families_graph,
    "davis": lambda: nx.Graph(nx.davis_southern_women_graph()),  # bipartite: no triangles
}


def random_graph(kind: str, seed: int) -> nx.Graph:
    rng = np.random.default_rng(seed)
    graph = (
        nx.gnp_random_graph(120, 0.06, seed=seed)
        if kind == "gnp"
        else nx.powerlaw_cluster_graph(150, 3, 0.4, seed=seed)
    )
    for u, v in graph.edges():
        graph[u][v]["weight"] = float(rng.uniform(0.1, 2.0))
    return graph


def graphs():
    out = [(name, make()) for name, make in SHIPPED.items()]
    return out + [(f"{kind}-{seed}", random_graph(kind, seed)) for kind in ("gnp", "powerlaw") for seed in (0, 1)]


GRAPHS = graphs()
IDS = [name for name, _ in GRAPHS]


def partitions(graph: nx.Graph):
    """Partitions a user would ask about: Louvain's (seeded), the greedy one, label
    propagation's (as the dict_values networkx returns), and one set per node."""
    yield community.louvain_communities(graph, seed=0)
    yield community.greedy_modularity_communities(graph)
    yield community.label_propagation_communities(graph)
    yield [{v} for v in graph]


@pytest.mark.parametrize("name,graph", GRAPHS, ids=IDS)
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("resolution", [1.0, 0.5, 2.0])
def test_modularity_equals_networkx(name, graph, weighted, resolution):
    g = gg.Graph.from_networkx(graph, weight="weight" if weighted else None)
    for partition in partitions(graph):
        partition = list(partition)
        ref = community.modularity(graph, partition, weight="weight" if weighted else None, resolution=resolution)
        assert gg.modularity(g, partition, resolution=resolution) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("name,graph", GRAPHS, ids=IDS)
def test_triangles_transitivity_and_clustering_equal_networkx(name, graph):
    g = gg.Graph.from_networkx(graph)
    nodes = list(graph)
    per_node = nx.triangles(graph)
    assert gg.triangles(g, per_node=True).tolist() == [per_node[v] for v in nodes]
    assert gg.triangles(g) == sum(per_node.values()) // 3
    assert gg.transitivity(g) == pytest.approx(nx.transitivity(graph), abs=1e-12)
    clustering = nx.clustering(graph)  # unweighted
    np.testing.assert_allclose(gg.clustering(g).numpy(), [clustering[v] for v in nodes], rtol=0, atol=1e-12)


def test_the_karate_club_has_45_triangles():
    g = gg.Graph.from_networkx(nx.karate_club_graph())
    assert (g.n, g.num_edges, gg.triangles(g)) == (34, 78, 45)


@pytest.mark.parametrize("famous", ["Zachary", "Krackhardt_Kite", "Petersen", "Frucht", "Meredith"])
def test_famous_graphs_equal_igraph(famous):
    ig = igraph.Graph.Famous(famous)
    edges = np.array(ig.get_edgelist())
    g = gg.Graph.from_edges(edges[:, 0], edges[:, 1], n=ig.vcount())
    membership = ig.community_multilevel().membership
    assert gg.modularity(g, membership) == pytest.approx(ig.modularity(membership), abs=1e-12)
    assert gg.modularity(g, membership, resolution=0.7) == pytest.approx(
        ig.modularity(membership, resolution=0.7), abs=1e-12
    )
    assert gg.triangles(g) == len(ig.list_triangles())
    assert gg.transitivity(g) == pytest.approx(ig.transitivity_undirected(), abs=1e-12)
    np.testing.assert_allclose(gg.clustering(g).numpy(), ig.transitivity_local_undirected(mode="zero"), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [True, False])
def test_directed_modularity_equals_networkx(seed, weighted):
    rng = np.random.default_rng(seed)
    graph = nx.gnp_random_graph(80, 0.08, seed=seed, directed=True)
    for u, v in graph.edges():
        graph[u][v]["weight"] = float(rng.uniform(0.1, 3.0))
    weight = "weight" if weighted else None
    g = gg.Graph.from_networkx(graph, weight=weight)
    assert g.directed and g.num_edges == graph.number_of_edges()
    partition = community.louvain_communities(graph.to_undirected(), seed=seed)
    for resolution in (1.0, 0.6):
        ref = community.modularity(graph, partition, weight=weight, resolution=resolution)
        assert gg.modularity(g, partition, resolution=resolution) == pytest.approx(ref, abs=1e-12)


def test_the_raw_knn_lists_directed_modularity_equals_networkx_on_the_digraph():
    x = torch.randn(60, 6, generator=torch.Generator().manual_seed(0))
    y = np.arange(60) % 3
    knn = gg.knn_graph(x + 2 * torch.from_numpy(y)[:, None], k=4)
    digraph = nx.DiGraph()
    digraph.add_nodes_from(range(60))
    for i in range(60):
        for j, w in zip(knn.indices[i].tolist(), knn.weights[i].tolist(), strict=True):
            digraph.add_edge(i, j, weight=w)
    blocks = [set(np.flatnonzero(y == c).tolist()) for c in range(3)]
    q = gg.modularity(knn.to_graph("directed"), y)
    assert q == pytest.approx(community.modularity(digraph, blocks), abs=1e-12)
    assert q != pytest.approx(gg.modularity(knn, y), abs=1e-6)  # not the symmetrised graph's


@pytest.mark.parametrize("mode", ["mean", "max", "mutual"])
def test_a_knn_graph_as_a_graph_keeps_its_measures(mode):
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(1))
    y = np.arange(200) % 4
    knn = gg.knn_graph(x, k=5)
    g = knn.to_graph(mode)
    assert (g.to_scipy() != knn.to_scipy(mode)).nnz == 0
    assert gg.modularity(g, y) == pytest.approx(gg.modularity(knn, y, mode=mode), abs=1e-12)
    if mode == "max":
        assert gg.triangles(g, per_node=True).tolist() == gg.triangles(knn, per_node=True).tolist()
        assert gg.motifs(g, y) == gg.motifs(knn, y)


# ---- kNN lists with fewer than k neighbours ------------------------------------------------


def padded_lists(seed=0, n=80, k=6):
    """kNN lists with about a third of the slots emptied (-1, and a weight faiss would give
    them), and the networkx DiGraph of the remaining entries, written out by hand."""
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed))
    g = gg.knn_graph(x, k=k)
    rng = np.random.default_rng(seed)
    indices, weights = g.indices.clone(), g.weights.clone()
    empty = torch.from_numpy(rng.random((n, k)) < 0.35)
    indices[empty] = -1
    weights[empty] = -float("inf")
    digraph = nx.DiGraph()
    digraph.add_nodes_from(range(n))
    for i in range(n):
        for j, w in zip(indices[i].tolist(), weights[i].tolist(), strict=True):
            if j >= 0:
                digraph.add_edge(i, j, weight=w)
    return gg.KnnGraph(indices, weights), digraph


def symmetrised(digraph: nx.DiGraph, mode: str) -> nx.Graph:
    """The undirected graph of the modes, from their definitions in KnnGraph's docstring."""
    graph = nx.Graph()
    graph.add_nodes_from(digraph)
    for i, j, d in digraph.edges(data=True):
        w, back = d["weight"], digraph.get_edge_data(j, i)
        if back is not None:
            graph.add_edge(i, j, weight=(w + back["weight"]) / 2 if mode != "max" else max(w, back["weight"]))
        elif mode == "mean":
            graph.add_edge(i, j, weight=w / 2)
        elif mode == "max":
            graph.add_edge(i, j, weight=w)
    return graph


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["mean", "max", "mutual"])
def test_empty_slots_are_no_edges_to_every_measure(seed, mode, tmp_path):
    g, digraph = padded_lists(seed)
    assert bool((g.indices == -1).any()) and bool((g.weights[g.indices == -1] == 0).all())
    graph = symmetrised(digraph, mode)
    labels = np.arange(g.n) % 3
    blocks = [set(np.flatnonzero(labels == c).tolist()) for c in range(3)]
    for weighted in (True, False):
        ref = community.modularity(graph, blocks, weight="weight" if weighted else None)
        assert gg.modularity(g, labels, mode=mode, weighted=weighted) == pytest.approx(ref, abs=1e-12)
    expected = nx.to_scipy_sparse_array(graph, nodelist=range(g.n), format="csr")
    assert abs(g.to_scipy(mode) - expected).max() < 1e-15
    union = symmetrised(digraph, "max")
    per_node = nx.triangles(union)
    assert gg.triangles(g, per_node=True).tolist() == [per_node[i] for i in range(g.n)]
    assert gg.transitivity(g) == pytest.approx(nx.transitivity(union), abs=1e-12)
    assert gg.modularity(g.to_graph("directed"), blocks) == pytest.approx(
        community.modularity(digraph, blocks), abs=1e-12
    )
    null = gg.modularity_null(g, labels, permutations=20, mode=mode)
    assert null.q == pytest.approx(gg.modularity(g, labels, mode=mode), abs=1e-12)
    back = gg.KnnGraph.load(g.save(tmp_path / "padded"))
    assert torch.equal(back.indices, g.indices) and torch.equal(back.weights, g.weights)


@pytest.mark.parametrize("negative", ["keep", "clip"])
def test_mean_modularity_reads_the_directed_weights_alone(negative):
    # in "mean" mode A = (W + W^T) / 2, so every sum is a sum of W: no reverse edge is looked
    # up (the graph's reciprocity is never computed), on lists with empty slots and signed weights
    g, _ = padded_lists(seed=4)
    weights = torch.where(torch.arange(g.k) % 3 == 1, -g.weights, g.weights)  # a third negative
    g = gg.KnnGraph(g.indices, weights)
    w = np.zeros((g.n, g.n))  # W written out, then A
    for i, (row, row_w) in enumerate(zip(g.indices.tolist(), g.weights.tolist(), strict=True)):
        for j, v in zip(row, row_w, strict=True):
            if j >= 0:
                w[i, j] = max(v, 0.0) if negative == "clip" else v
    labels = np.arange(g.n) % 4
    blocks = [set(np.flatnonzero(labels == c)) for c in range(4)]
    want = community.modularity(nx.from_numpy_array((w + w.T) / 2), blocks, weight="weight", resolution=0.7)
    assert gg.modularity(g, labels, negative=negative, resolution=0.7) == pytest.approx(want, abs=1e-12)
    assert "reciprocity" not in g._cache
    # unvalidated lists keep what faiss pads an empty slot with (-inf): the slot is skipped
    padded = gg.KnnGraph(g.indices, g.weights.masked_fill(g.indices < 0, -np.inf), validate=False)
    assert gg.modularity(padded, labels, negative=negative, resolution=0.7) == pytest.approx(want, abs=1e-12)
    positive = gg.KnnGraph(g.indices, g.weights.abs().masked_fill(g.indices < 0, -np.inf), validate=False)
    assert gg.modularity(positive, labels, negative="raise") == gg.modularity(positive, labels)  # no weight < 0
    from gpugraph.graph.edges import edge_rows
    from gpugraph.graph.modularity import _sums_torch

    total, within, s_out, s_in, _ = _sums_torch(edge_rows(g), torch.from_numpy(labels), 4, True, negative == "clip")
    q = within / total - 0.7 * float((s_out * s_in).sum()) / total**2
    assert q == pytest.approx(want, abs=1e-12)  # the torch statement of the same sums (other devices)
    assert "reciprocity" not in g._cache


@pytest.mark.parametrize("mode", ["mean", "max", "mutual"])
def test_the_torch_statements_read_empty_slots_as_the_compiled_passes_do(mode):
    # the paths CUDA graphs take, run here on the CPU against the compiled passes
    from gpugraph.graph.edges import EdgeRows, edge_rows
    from gpugraph.graph.knngraph import reciprocity_of
    from gpugraph.graph.modularity import _sums_torch
    from gpugraph.graph.motifs import _oriented_csr_torch, oriented_csr
    from gpugraph.kernels import graph_cpu

    g, _ = padded_lists(3)
    recip, partner = reciprocity_of(g.indices, g.weights, compiled=False)
    ref_recip, ref_partner = g.reciprocity()
    assert torch.equal(recip, ref_recip) and torch.equal(partner, ref_partner)
    edges = edge_rows(g, mode)
    codes = torch.arange(g.n) % 3
    for weighted in (True, False):
        ours = _sums_torch(edges, codes, 3, weighted, clip=False)
        ref = graph_cpu.modularity_sums(
            edges.rows.numpy(),
            edges.cols.numpy(),
            edges.weights.numpy(),
            edges.recip.numpy(),
            edges.partner.numpy(),
            codes.numpy(),
            3,
            graph_cpu.MODES[mode],
            weighted,
            False,
            False,
        )
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-12)
    union = edge_rows(g, "max")
    for a, b in zip(_oriented_csr_torch(union), oriented_csr(union), strict=True):
        assert torch.equal(a, b)
    graph = gg.Graph.from_edges([0, 1, 2, 2], [1, 2, 0, 3])
    as_is = edge_rows(graph)
    assert isinstance(as_is, EdgeRows)
    for a, b in zip(_oriented_csr_torch(as_is), oriented_csr(as_is), strict=True):
        assert torch.equal(a, b)


def test_an_empty_slot_is_minus_one_only():
    with pytest.raises(ValueError, match=r"in \[0, N\) = \[0, 3\) or be -1 \(an empty slot\).*node 1"):
        gg.KnnGraph(torch.tensor([[1, -1], [-2, 0], [0, 1]]), torch.ones(3, 2))
    nan = float("nan")  # an empty slot's weight is anything
    g = gg.KnnGraph(torch.tensor([[-1, -1], [0, -1], [-1, -1]]), torch.tensor([[nan, nan], [0.5, nan], [nan, nan]]))
    assert gg.triangles(g) == 0 and g.to_graph().num_edges == 1
    with pytest.raises(ValueError, match="total weight 2m = 0"):
        gg.modularity(gg.KnnGraph(torch.full((3, 2), -1), torch.ones(3, 2)), [0, 1, 1])


# ---- the null on any graph ----------------------------------------------------------------


@pytest.mark.parametrize("directed", [False, True])
def test_the_null_of_a_graph_samples_the_modularity_of_permuted_labels(directed):
    graph = random_graph("gnp", 3)
    if directed:
        graph = nx.DiGraph((u, v, d) for u, v, d in graph.edges(data=True))
    g = gg.Graph.from_networkx(graph)
    labels = np.arange(g.n) % 4
    r = gg.modularity_null(g, labels, permutations=5, seed=7)
    rng = np.random.default_rng(7)  # the draws the null documents: labels at permuted positions
    for sample in r.samples:
        shuffled = labels[rng.permutation(g.n)]
        blocks = [{g.names[i] for i in np.flatnonzero(shuffled == c)} for c in range(4)]  # node i is names[i]
        assert sample == pytest.approx(community.modularity(graph, blocks), abs=1e-12)


# ---- building graphs, and what is refused -------------------------------------------------


def test_constructors_agree_and_duplicates_sum():
    src, dst, w = [0, 1, 2, 0], [1, 2, 0, 1], [1.0, 2.0, 3.0, 0.5]  # edge 0-1 given twice: 1.5
    g = gg.Graph.from_edges(src, dst, w, n=4)
    dense = np.zeros((4, 4))
    for u, v, x in zip(src, dst, w, strict=True):
        dense[u, v] += x
        dense[v, u] += x
    np.testing.assert_array_equal(g.to_scipy().toarray(), dense)
    assert (g.n, g.num_edges, g.degree().tolist()) == (4, 3, [2, 2, 2, 0])
    assert (gg.Graph.from_scipy(scipy.sparse.csr_array(dense)).to_scipy() != g.to_scipy()).nnz == 0
    assert (gg.Graph.from_scipy(dense).to_scipy() != g.to_scipy()).nnz == 0
    nxg = g.to_networkx()
    assert nxg[0][1]["weight"] == 1.5 and nxg.number_of_nodes() == 4
    assert (gg.Graph.from_networkx(nxg).to_scipy() != g.to_scipy()).nnz == 0
    raw = gg.Graph(g.indptr, g.indices.flip(0).flip(0), g.weights)  # CSR as it is
    assert torch.equal(raw.indices, g.indices)
    d = gg.Graph.from_edges(src, dst, w, n=4, directed=True)
    assert d.directed and d.num_edges == 3 and d.to_scipy()[0, 1] == 1.5 and d.to_scipy()[1, 0] == 0
    assert (d.to_undirected().to_scipy() != g.to_scipy()).nnz == 0
    nxd = d.to_networkx()
    assert isinstance(nxd, nx.DiGraph) and nxd.number_of_edges() == 3


def test_partitions_name_nodes_by_their_networkx_names():
    graph = nx.les_miserables_graph()
    g = gg.Graph.from_networkx(graph)
    assert g.names == list(graph)
    partition = community.louvain_communities(graph, seed=1)
    labels = {v: c for c, block in enumerate(partition) for v in block}
    assert gg.modularity(g, partition) == pytest.approx(gg.modularity(g, [labels[v] for v in g.names]), abs=1e-15)
    assert gg.motifs(g, partition)["same"] + gg.motifs(g, partition)["pair"] + gg.motifs(g, partition)[
        "distinct"
    ] == gg.triangles(g)


@pytest.mark.parametrize(
    "partition,match",
    [
        ([{0, 1}, {2}], r"1 node\(s\) are in no block of the partition \(e.g. 3\)"),
        ([{0, 1}, {1, 2, 3}], r"node 1 is in two blocks of the partition \(0 and 1\)"),
        ([{0, 1}, {2, 3, 9}], r"the partition names node 9; this graph's nodes are 0..3"),
        ([[0, 1], [2, "x"]], r"the partition names node 'x'"),
    ],
)
def test_a_partition_that_is_not_one_is_refused(partition, match):
    g = gg.Graph.from_edges([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=match):
        gg.modularity(g, partition)


def test_what_is_refused_says_what_to_do():
    with pytest.raises(ValueError, match=r"2 self-loop\(s\) \(at nodes 1, 2\).*remove them first"):
        gg.Graph.from_edges([0, 1, 2], [1, 1, 2])
    with pytest.raises(ValueError, match=r"self-loops \(at nodes 'a'\).*selfloop_edges"):
        gg.Graph.from_networkx(nx.Graph([("a", "a"), ("a", "b")]))
    with pytest.raises(ValueError, match=r"A\[0, 1\] = 1 but A\[1, 0\] = 2.*directed=True"):
        gg.Graph.from_scipy(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"an entry at \[0, 1\] but none at \[1, 0\]"):
        gg.Graph.from_scipy(np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"not symmetric.*Graph.from_edges"):
        gg.Graph(torch.tensor([0, 1, 1]), torch.tensor([1]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"edge ends must lie in \[0, n\) = \[0, 2\)"):
        gg.Graph.from_edges([0], [2], n=2)
    with pytest.raises(TypeError, match="src must hold integer node ids"):
        gg.Graph.from_edges([0.0], [1.0])
    with pytest.raises(ValueError, match=r"weights must have one entry an edge \(2\)"):
        gg.Graph.from_edges([0, 1], [1, 2], [1.0])
    with pytest.raises(ValueError, match="indptr must rise from 0 to len"):
        gg.Graph(torch.tensor([0, 2, 1]), torch.tensor([1]), directed=True)
    g = gg.Graph.from_edges([0, 1], [1, 2])
    with pytest.raises(ValueError, match=r"mode='max' symmetrises the lists of a KnnGraph; a Graph is used as it is"):
        gg.modularity(g, [0, 0, 1], mode="max")
    d = gg.Graph.from_edges([0, 1], [1, 2], directed=True)
    for measure in (gg.triangles, gg.transitivity, gg.clustering):
        with pytest.raises(ValueError, match=r"counts an undirected graph; this Graph is directed: .*to_undirected"):
            measure(d)
    with pytest.raises(AttributeError, match="Graph is immutable"):
        g.weights = None
    with pytest.raises(TypeError, match=r"must be a KnnGraph .* or a gpugraph.Graph, got csr_array"):
        gg.triangles(g.to_scipy())


def test_negative_weights_of_a_graph_keep_clip_or_raise():
    g = gg.Graph.from_edges([0, 1, 2, 0], [1, 2, 3, 3], [1.0, 2.0, -0.5, 1.0])
    labels = [0, 0, 1, 1]
    graph = g.to_networkx()
    assert gg.modularity(g, labels) == pytest.approx(community.modularity(graph, [{0, 1}, {2, 3}]), abs=1e-12)
    graph.remove_edge(2, 3)  # clip: the negative edge counts 0
    assert gg.modularity(g, labels, negative="clip") == pytest.approx(
        community.modularity(graph, [{0, 1}, {2, 3}]), abs=1e-12
    )
    with pytest.raises(ValueError, match=r"2 directed edges with negative weight \(min -0.5\)"):
        gg.modularity(g, labels, negative="raise")


def test_to_cugraph_of_a_graph_names_what_it_needs(monkeypatch):
    import builtins

    g = gg.Graph.from_edges([0, 1], [1, 2])
    real = builtins.__import__

    def no_rapids(name, *args, **kwargs):
        if name in ("cudf", "cugraph"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rapids)
    with pytest.raises(gg.GpuGraphError, match="pip install cugraph-cu12 cudf-cu12"):
        g.to_cugraph()


def test_to_cugraph_wants_a_graph_on_the_gpu():
    pytest.importorskip("cugraph", reason="RAPIDS cuGraph is not installed (it needs a CUDA GPU)")
    with pytest.raises(ValueError, match="to_cugraph needs a graph on a CUDA device"):
        gg.Graph.from_edges([0, 1], [1, 2]).to_cugraph()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_graph_on_the_gpu_measures_as_on_the_cpu():
    graph = random_graph("powerlaw", 0)
    g = gg.Graph.from_networkx(graph)
    labels = np.arange(g.n) % 5
    d = g.to("cuda")
    assert gg.modularity(d, labels) == pytest.approx(gg.modularity(g, labels), abs=1e-12)
    assert gg.triangles(d, per_node=True).cpu().tolist() == gg.triangles(g, per_node=True).tolist()
    assert gg.transitivity(d) == pytest.approx(gg.transitivity(g), abs=1e-15)
    padded, _ = padded_lists(0)
    assert gg.modularity(padded.to("cuda"), np.arange(padded.n) % 3) == pytest.approx(
        gg.modularity(padded, np.arange(padded.n) % 3), abs=1e-12
    )
    if pytest.importorskip("cugraph", reason="RAPIDS cuGraph is not installed"):
        back = gg.Graph.from_cugraph(d.to_cugraph())
        assert (back.to_scipy() != g.to_scipy()).nnz == 0
