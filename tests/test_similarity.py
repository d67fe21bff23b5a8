import numpy as np
import pytest
import torch
from conftest import clustered
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

import gpugraph as gg


def dense_lsim(x1, x2):
    """The definition: dense cosine graphs with zero diagonal, mean row cosine (float64)."""
    def graph(x):
        x = np.asarray(x, dtype=np.float64)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        a = xn @ xn.T
        np.fill_diagonal(a, 0.0)
        return a
    a1, a2 = graph(x1), graph(x2)
    num = (a1 * a2).sum(1)
    return float(np.mean(num / (np.linalg.norm(a1, axis=1) * np.linalg.norm(a2, axis=1))))


def numpy_cka(x1, x2):
    x1 = x1 - x1.mean(0)
    x2 = x2 - x2.mean(0)
    return np.linalg.norm(x2.T @ x1) ** 2 / (np.linalg.norm(x1.T @ x1) * np.linalg.norm(x2.T @ x2))


@pytest.mark.parametrize("d1,d2", [(5, 7), (40, 3), (300, 250)])  # feature form and tiles
def test_dense_lsim_matches_the_definition(d1, d2):
    rng = np.random.default_rng(d1)
    x1 = rng.normal(size=(200, d1)) + 0.5
    x2 = np.tanh(x1[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(200, d2)))
    assert gg.layer_similarity(x1, x2) == pytest.approx(dense_lsim(x1, x2), abs=1e-9)
    assert gg.layer_similarity(torch.tensor(x1, dtype=torch.float32), x2) == pytest.approx(dense_lsim(x1, x2), abs=1e-5)


def test_knn_lsim_uses_mean_mode_graphs():
    x1, _ = clustered(n=150, d=6, seed=1)
    x2 = x1 + 0.5 * torch.randn(150, 6, generator=torch.Generator().manual_seed(1))
    a1 = gg.knn_graph(x1, 5).to_scipy("mean").toarray().astype(np.float64)
    a2 = gg.knn_graph(x2, 5).to_scipy("mean").toarray().astype(np.float64)
    ref = np.mean((a1 * a2).sum(1) / (np.linalg.norm(a1, axis=1) * np.linalg.norm(a2, axis=1)))
    assert gg.layer_similarity(x1, x2, k=5) == pytest.approx(ref, abs=1e-9)
    assert gg.layer_similarity(x1, x1, k=5) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.floats(0.01, 100))
def test_lsim_is_invariant_to_rotation_and_scaling(seed, scale):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(80, 6))
    x2 = rng.normal(size=(80, 4)) + x1[:, :4]
    q = ortho_group.rvs(6, random_state=seed % 2**32)
    assert gg.layer_similarity(scale * x1 @ q, x2) == pytest.approx(gg.layer_similarity(x1, x2), abs=1e-9)
    assert gg.layer_similarity(x1, x1) == pytest.approx(1.0, abs=1e-12)


def test_cka_matches_numpy_and_minibatch_estimator():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(120, 10))
    x2 = x1 @ rng.normal(size=(10, 4)) + 0.3 * rng.normal(size=(120, 4))
    assert gg.cka(x1, x2) == pytest.approx(numpy_cka(x1, x2), abs=1e-12)
    unbiased = gg.cka(x1, x2, unbiased=True)
    acc = gg.MinibatchCKA()
    acc.update(x1, x2)
    assert acc.compute() == pytest.approx(unbiased, abs=1e-12)
    assert abs(unbiased - numpy_cka(x1, x2)) < 0.1
    with pytest.raises(ValueError, match="no minibatch seen"):
        gg.MinibatchCKA().compute()
    with pytest.raises(ValueError, match="at least 4 samples"):
        gg.cka(x1[:3], x2[:3], unbiased=True)


def test_mutual_knn_is_mean_shared_fraction():
    x1, _ = clustered(n=100, d=5, seed=2)
    x2 = x1 + 0.8 * torch.randn(100, 5, generator=torch.Generator().manual_seed(2))
    g1, g2 = gg.knn_graph(x1, 4), gg.knn_graph(x2, 4)
    ref = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(g1.indices.tolist(), g2.indices.tolist())])
    assert gg.mutual_knn(x1, x2, k=4) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("measure,k", [("lsim", None), ("lsim", 5), ("cka", None), ("knn_overlap", 5), ("mutual_knn", 5)])
def test_similarity_matrix_entries_equal_pairwise_calls(tmp_path, measure, k):
    x, _ = clustered(n=120, d=8, seed=3)
    acts = {"a": x, "b": torch.relu(x), "c": x @ torch.randn(8, 12, generator=torch.Generator().manual_seed(0))}
    m = gg.similarity_matrix(acts, measure=measure, k=k)
    pair = {
        "lsim": lambda p, q: gg.layer_similarity(p, q, k=k),
        "cka": gg.cka,
        "knn_overlap": lambda p, q: gg.knn_overlap(gg.knn_graph(p, k), gg.knn_graph(q, k)),
        "mutual_knn": lambda p, q: gg.mutual_knn(p, q, k),
    }[measure]
    ref = np.array([[pair(acts[a], acts[b]) for b in acts] for a in acts])
    np.testing.assert_allclose(m.values, ref, atol=1e-9)
    np.testing.assert_allclose(np.diag(m.values), 1.0, atol=1e-9)
    assert m.identify() == ["a", "b", "c"]
    assert m.plot(tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert '"measure"' in m.to_json()


def test_lsim_at_20000_samples_holds_no_n_by_n_matrix():
    import resource
    x1 = torch.randn(20000, 32, generator=torch.Generator().manual_seed(0))
    x2 = torch.tanh(x1[:, :16])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value = gg.layer_similarity(x1, x2)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grown < 20000**2 * 8 / 4  # far below one float64 N x N matrix (3.2 GB)
    sub = slice(0, 2000)
    assert 0 < value < 1 and abs(value - dense_lsim(x1[sub], x2[sub])) < 0.05


def test_similarity_errors():
    with pytest.raises(ValueError, match="same samples: x1 has N=10, x2 has N=12"):
        gg.layer_similarity(torch.randn(10, 3), torch.randn(12, 3))
    with pytest.raises(ValueError, match="measure must be one of"):
        gg.similarity_matrix({"a": torch.randn(10, 3)}, measure="svcca")
    with pytest.raises(ValueError, match="layer .b. of acts_b has N=11, expected N=10"):
        gg.similarity_matrix({"a": torch.randn(10, 3)}, {"b": torch.randn(11, 3)})
    with pytest.raises(TypeError, match="non-empty mapping"):
        gg.similarity_matrix({})


def test_motif_curve_counts_and_share():
    x, labels = clustered(n=200, d=6, classes=3, seed=4)
    noise = torch.randn(200, 6, generator=torch.Generator().manual_seed(4))
    curve = gg.motif_curve({"clustered": x, "noise": noise}, labels, k=5, n=100, repeats=2)
    parts = gg.curves.subsets(200, 100, 2, 0)
    c = gg.motifs(gg.knn_graph(x[parts[0]], 5), labels[parts[0]])
    assert curve.values[0, 0] == pytest.approx(c["same"] / sum(c.values()))
    assert curve.mean[0] > curve.mean[1]
    assert set(curve.params["counts"]["noise"]) == {"same", "pair", "distinct"}
