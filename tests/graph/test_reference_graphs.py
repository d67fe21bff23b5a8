"""Cases ported from other libraries' test suites, with their expected values as those
suites state them (networkx's community-quality and clustering tests) or as the other
library computes them (igraph's famous graphs): references gpugraph did not write.

A KnnGraph lists exactly k neighbours a node, so an undirected graph is expressed as one
whose union ("max" mode, unweighted) is that graph: every edge is listed by at least one
of its ends (an assignment found by max-flow, each node taking at most k edges), and each
list is filled up to k with other neighbours. That needs every degree >= k; graphs that
cannot be written so (karate club: a node of degree 1 beside 78 edges) wait for gg.Graph.
"""

import igraph
import networkx as nx
import numpy as np
import pytest
import torch

import gpugraph as gg


def as_knn_graph(graph: nx.Graph, k: int) -> gg.KnnGraph:
    """A KnnGraph whose unweighted union is ``graph`` (nodes 0..n-1), k lists a node."""
    n = graph.number_of_nodes()
    flow = nx.DiGraph()
    for u, v in graph.edges():
        e = ("e", min(u, v), max(u, v))
        flow.add_edge("s", e, capacity=1)
        flow.add_edge(e, ("n", u), capacity=1)
        flow.add_edge(e, ("n", v), capacity=1)
    for u in graph.nodes():
        flow.add_edge(("n", u), "t", capacity=k)
    value, paths = nx.maximum_flow(flow, "s", "t")
    assert value == graph.number_of_edges(), f"no way to list every edge with k={k}"
    lists = {u: [] for u in graph.nodes()}
    for _, a, b in (e for e in paths if isinstance(e, tuple) and e[0] == "e"):
        owner = a if paths[("e", a, b)].get(("n", a), 0) else b
        lists[owner].append(b if owner == a else a)
    for u in graph.nodes():  # fill each list up to k with other neighbours
        lists[u] += [v for v in sorted(graph[u]) if v not in lists[u]][: k - len(lists[u])]
        assert len(lists[u]) == k, f"node {u} has degree {graph.degree(u)} < k={k}"
    indices = torch.tensor([lists[u] for u in range(n)])
    g = gg.KnnGraph(indices, torch.ones(n, k))
    union = g.to_networkx("max", weighted=False)
    assert nx.utils.edges_equal(union.edges(), graph.edges())
    return g


def labels_of(partition, n: int) -> np.ndarray:
    labels = np.full(n, -1)
    for c, block in enumerate(partition):
        labels[list(block)] = c
    assert (labels >= 0).all()
    return labels


def q(g, partition, resolution=1.0):
    return gg.modularity(g, labels_of(partition, g.n), mode="max", weighted=False, resolution=resolution)


# ---- networkx/algorithms/community/tests/test_quality.py --------------------------------


def test_networkx_modularity_of_the_barbell():
    g = as_knn_graph(nx.barbell_graph(3, 0), k=2)
    assert q(g, [{0, 1, 4}, {2, 3, 5}]) == pytest.approx(-16 / 14**2, abs=1e-12)
    assert q(g, [{0, 1, 2}, {3, 4, 5}]) == pytest.approx(35 * 2 / 14**2, abs=1e-12)


@pytest.mark.parametrize("gamma", [1, 2, 0.2])
def test_networkx_modularity_resolution_on_barbell_3_0(gamma):
    g = as_knn_graph(nx.barbell_graph(3, 0), k=2)
    assert q(g, [{0, 1, 4}, {2, 3, 5}], gamma) == pytest.approx(3 / 7 - gamma * 100 / 14**2, abs=1e-12)
    assert q(g, [{0, 1, 2}, {3, 4, 5}], gamma) == pytest.approx(6 / 7 - gamma * 98 / 14**2, abs=1e-12)


@pytest.mark.parametrize(
    "partition,gammas,within,squares",
    [
        ([frozenset(range(5)), frozenset(range(8, 13)), frozenset(range(5, 8))], [1, 2, 0.2], 22, 918),
        ([{0, 1, 2, 3}, {9, 10, 11, 12}, {5, 6, 7}, {4}, {8}], [1, 2.5, 0.2], 14, 598),
        ([frozenset(range(8)), frozenset(range(8, 13))], [1, 2, 0.3], 23, 1170),
    ],
)
def test_networkx_modularity_resolution_on_barbell_5_3(partition, gammas, within, squares):
    g = as_knn_graph(nx.barbell_graph(5, 3), k=2)
    for gamma in gammas:
        assert q(g, partition, gamma) == pytest.approx(within / 24 - gamma * squares / 48**2, abs=1e-12)


# ---- networkx/algorithms/tests/test_cluster.py: TestTriangles ---------------------------


def test_networkx_triangles_of_a_path_the_cube_and_k5():
    path = as_knn_graph(nx.path_graph(10), k=1)
    assert gg.triangles(path) == 0 and gg.triangles(path, per_node=True).tolist() == [0] * 10
    cube = as_knn_graph(nx.cubical_graph(), k=3)
    assert gg.triangles(cube, per_node=True).tolist() == [0] * 8
    k5 = nx.complete_graph(5)
    g = as_knn_graph(k5, k=4)
    assert gg.triangles(g, per_node=True).tolist() == [6, 6, 6, 6, 6] and gg.triangles(g) == 10
    k5.remove_edge(1, 2)
    g = as_knn_graph(k5, k=3)
    assert gg.triangles(g, per_node=True).tolist() == [5, 3, 3, 5, 5]


def test_motifs_of_k5_by_hand():
    # K5 with classes [a, a, a, b, b]: of its 10 triangles, 1 is all-a (0 1 2), 3 * 1 + 3 = 9
    # mix two classes (two a's and one b: C(3,2) * 2 = 6; one a and both b's: 3), none three
    g = as_knn_graph(nx.complete_graph(5), k=4)
    assert gg.motifs(g, ["a", "a", "a", "b", "b"]) == {"same": 1, "pair": 9, "distinct": 0}


# ---- igraph's famous graphs (Graph.Famous), measured by igraph --------------------------

FAMOUS = [
    "Tetrahedron",
    "Octahedron",
    "Icosahedron",
    "Cubical",
    "Dodecahedron",
    "Petersen",
    "Heawood",
    "Frucht",
    "Franklin",
    "Coxeter",
    "Robertson",
    "Folkman",
]


@pytest.mark.parametrize("name", FAMOUS)
def test_igraph_famous_graphs_triangles_and_modularity(name):
    ig = igraph.Graph.Famous(name)
    degree = min(ig.degree())
    g = as_knn_graph(nx.Graph(ig.get_edgelist()), k=degree)
    per_node = np.zeros(ig.vcount(), dtype=np.int64)
    triangles = ig.list_triangles()
    for t in triangles:
        per_node[list(t)] += 1
    assert gg.triangles(g) == len(triangles)
    assert gg.triangles(g, per_node=True).tolist() == per_node.tolist()
    membership = ig.community_multilevel().membership  # igraph's own partition, and its modularity
    assert q(g, [set(np.flatnonzero(np.array(membership) == c)) for c in set(membership)]) == pytest.approx(
        ig.modularity(membership), abs=1e-12
    )
    for gamma in (0.5, 2.0):
        assert gg.modularity(g, membership, mode="max", weighted=False, resolution=gamma) == pytest.approx(
            ig.modularity(membership, resolution=gamma), abs=1e-12
        )
