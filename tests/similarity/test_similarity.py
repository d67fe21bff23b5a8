import itertools
import warnings

import numpy as np
import pytest
import torch
from helpers import clustered, dense_lsim, exact_knn, paper_adjacency, peak_growth
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

import gpugraph as gg
from gpugraph.similarity import gram as _gram
from gpugraph.studies.curves import subsets


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


def test_measures_read_a_model_output_that_requires_grad_as_values():
    # a model's output carries autograd history; the measures read its values and build no graph
    torch.manual_seed(0)
    x = torch.randn(50, 6)
    out1 = torch.nn.Linear(6, 5)(x)
    out2 = torch.nn.Linear(6, 4)(x)
    assert out1.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = gg.layer_similarity(out1, out2)
        cka = gg.cka(out1, out2)
        g = gg.knn_graph(out1, k=3)
    assert value == pytest.approx(dense_lsim(out1.detach().numpy(), out2.detach().numpy()), abs=1e-6)
    assert cka == pytest.approx(numpy_cka(out1.detach().double().numpy(), out2.detach().double().numpy()), abs=1e-6)
    assert not g.weights.requires_grad


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
    ref = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(g1.indices.tolist(), g2.indices.tolist(), strict=True)])
    assert gg.mutual_knn(x1, x2, k=4) == pytest.approx(ref, abs=1e-12)


def knn_lsim(x1, x2, k):
    """LSim of the "mean"-mode kNN graphs, from the exact float64 search (no gpugraph)."""
    a1, a2 = paper_adjacency(x1, k), paper_adjacency(x2, k)
    return float(np.mean((a1 * a2).sum(1) / (np.linalg.norm(a1, axis=1) * np.linalg.norm(a2, axis=1))))


def neighbour_sets(x, k):
    return [set(r) for r in exact_knn(x, k)[0].tolist()]


@pytest.mark.parametrize(
    "measure,k", [("lsim", None), ("lsim", 5), ("cka", None), ("knn_overlap", 5), ("mutual_knn", 5)]
)
def test_similarity_matrix_equals_independent_references(tmp_path, measure, k):
    x, _ = clustered(n=120, d=8, seed=3)
    acts = {"a": x, "b": torch.relu(x), "c": x @ torch.randn(8, 12, generator=torch.Generator().manual_seed(0))}
    m = gg.similarity_matrix(acts, measure=measure, k=k)
    pair = {
        "lsim": (lambda p, q: dense_lsim(p, q)) if k is None else (lambda p, q: knn_lsim(p, q, k)),
        "cka": numpy_cka,
        "knn_overlap": lambda p, q: np.mean(
            [len(s & t) / len(s | t) for s, t in zip(neighbour_sets(p, k), neighbour_sets(q, k), strict=True)]
        ),
        "mutual_knn": lambda p, q: np.mean(
            [len(s & t) / k for s, t in zip(neighbour_sets(p, k), neighbour_sets(q, k), strict=True)]
        ),
    }[measure]
    arrays = {name: a.double().numpy() for name, a in acts.items()}
    ref = np.array([[pair(arrays[a], arrays[b]) for b in acts] for a in acts])
    np.testing.assert_allclose(m.values, ref, atol=1e-6)  # float32 inputs
    np.testing.assert_allclose(np.diag(m.values), 1.0, atol=1e-9)
    assert m.identify() == ["a", "b", "c"]
    assert m.plot(tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert '"measure"' in m.to_json()


def test_lsim_at_20000_samples_holds_no_n_by_n_matrix():
    setup = """
        import torch, gpugraph as gg
        x1 = torch.randn(20000, 32, generator=torch.Generator().manual_seed(0))
        x2 = torch.tanh(x1[:, :16])
        gg.layer_similarity(x1[:100], x2[:100])  # imports and first-call allocations
    """
    grown, value = peak_growth(setup, "gg.layer_similarity(x1, x2)")
    assert grown < 20000**2 * 8 / 8  # an eighth of one float64 N x N matrix (3.2 GB)
    x1 = torch.randn(20000, 32, generator=torch.Generator().manual_seed(0))
    x2 = torch.tanh(x1[:, :16])
    sub = slice(0, 2000)
    assert 0 < float(value) < 1 and abs(float(value) - dense_lsim(x1[sub], x2[sub])) < 0.05


def test_wide_cka_holds_no_d_by_d_matrix():
    # N = 200, D = 8000: one float64 D x D matrix is 512 MB; the N x N form needs 0.3 MB.
    setup = """
        import torch, gpugraph as gg
        g = torch.Generator().manual_seed(0)
        x1 = torch.randn(200, 8000, generator=g)
        x2 = torch.relu(x1[:, :4000]) + 0.1 * torch.randn(200, 4000, generator=g)
        gg.cka(x1[:10, :10], x2[:10, :10]); gg.cka(x1[:10, :10], x2[:10, :10], unbiased=True)
    """
    for call in (
        "gg.cka(x1, x2)",
        "gg.cka(x1, x2, unbiased=True)",
        "gg.similarity_matrix({'a': x1, 'b': x2}, measure='cka').values",
    ):
        grown, _ = peak_growth(setup, call)
        assert grown < 8000**2 * 8 / 4, call


def test_a_similarity_grid_keeps_no_converted_copy_of_its_layers():
    # 12 layers of 8000 x 128 float32: float64 copies of all of them would be 98 MB.
    setup = """
        import torch, gpugraph as gg
        g = torch.Generator().manual_seed(0)
        acts = {f"l{i}": torch.randn(8000, 128, generator=g) for i in range(12)}
        gg.similarity_matrix({k: v[:50] for k, v in acts.items()})
        gg.similarity_matrix({k: v[:50] for k, v in acts.items()}, measure="cka")
    """
    copies = 12 * 8000 * 128 * 8
    for measure in ("lsim", "cka"):
        grown, shape = peak_growth(setup, f"gg.similarity_matrix(acts, measure={measure!r}).values.shape")
        assert shape == "(12, 12)" and grown < copies / 2, (measure, grown)


@pytest.mark.parametrize("n,d1,d2", [(200, 12, 20), (30, 80, 50)])  # feature form, Gram form
def test_blocked_sums_are_exact_under_a_tiny_memory_budget(monkeypatch, n, d1, d2):
    from gpugraph._util import memory as _memory

    rng = np.random.default_rng(n)
    x1 = rng.normal(size=(n, d1)) + 0.3
    x2 = np.tanh(x1[:, :1] * rng.normal(size=(1, d2)) + rng.normal(size=(n, d2)))
    lsim, ck, unb = gg.layer_similarity(x1, x2), gg.cka(x1, x2), gg.cka(x1, x2, unbiased=True)
    monkeypatch.setattr(_memory, "budget", lambda device: 2048)  # blocks of a few rows and columns
    assert _gram._column_step(_gram.Rows(torch.tensor(x1)), _gram.Rows(torch.tensor(x2))) < d2
    assert _gram._row_step(d1 + d2, torch.device("cpu")) < n
    assert gg.layer_similarity(x1, x2) == pytest.approx(dense_lsim(x1, x2), abs=1e-12)
    assert gg.layer_similarity(x1, x2) == pytest.approx(lsim, abs=1e-12)
    assert gg.cka(x1, x2) == pytest.approx(numpy_cka(x1, x2), abs=1e-12) and gg.cka(x1, x2) == pytest.approx(
        ck, abs=1e-12
    )
    assert gg.cka(x1, x2, unbiased=True) == pytest.approx(unb, abs=1e-12)
    assert gg.cka(x1[:8], x2[:8], unbiased=True) == pytest.approx(u_statistic_cka(x1[:8], x2[:8]), abs=1e-12)


def u_statistic_hsic(k, l_):
    """The unbiased HSIC as its U-statistic, summed over ordered 4-tuples of distinct
    indices (Song et al., 2012): h = K_ij L_ij + K_ij L_qr - 2 K_ij L_iq. float64 loops."""
    n = len(k)
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2 * k[i, j] * l_[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def u_statistic_cka(x1, x2):
    k, l_ = x1 @ x1.T, x2 @ x2.T
    return u_statistic_hsic(k, l_) / np.sqrt(u_statistic_hsic(k, k) * u_statistic_hsic(l_, l_))


def test_unbiased_cka_and_minibatch_cka_equal_the_u_statistic():
    rng = np.random.default_rng(5)
    x1 = rng.normal(size=(14, 6))
    x2 = x1 @ rng.normal(size=(6, 3)) + 0.5 * rng.normal(size=(14, 3))
    a, b = x1[:7], x2[:7]
    assert gg.cka(a, b, unbiased=True) == pytest.approx(u_statistic_cka(a, b), abs=1e-12)
    acc = gg.MinibatchCKA()
    acc.update(x1[:7], x2[:7])
    acc.update(x1[7:], x2[7:])
    parts = [(x1[:7], x2[:7]), (x1[7:], x2[7:])]
    kl = sum(u_statistic_hsic(p @ p.T, q @ q.T) for p, q in parts)
    kk = sum(u_statistic_hsic(p @ p.T, p @ p.T) for p, q in parts)
    ll = sum(u_statistic_hsic(q @ q.T, q @ q.T) for p, q in parts)
    assert acc.compute() == pytest.approx(kl / np.sqrt(kk * ll), abs=1e-12)
    acc = gg.MinibatchCKA()  # batches of very different magnitude average in one scale
    acc.update(x1[:7], x2[:7])
    acc.update(1e3 * x1[7:], x2[7:])
    kl = u_statistic_hsic(*(p @ p.T for p in (x1[:7], x2[:7]))) + u_statistic_hsic(
        1e6 * x1[7:] @ x1[7:].T, x2[7:] @ x2[7:].T
    )
    kk = u_statistic_hsic(*(x1[:7] @ x1[:7].T,) * 2) + 1e12 * u_statistic_hsic(*(x1[7:] @ x1[7:].T,) * 2)
    assert acc.compute() == pytest.approx(kl / np.sqrt(kk * ll), abs=1e-12)


@pytest.mark.parametrize("tiny_budget", [False, True])
def test_a_grid_of_wide_layers_in_one_pass_equals_the_definitions(monkeypatch, tiny_budget):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 5))
    acts = {
        f"l{d}": np.tanh(base @ rng.normal(size=(5, d)) + 0.5 * rng.normal(size=(40, d))) + 0.2 for d in (60, 90, 120)
    }
    other = {"m": rng.normal(size=(40, 70)), "n": np.abs(base @ rng.normal(size=(5, 100)))}
    rows = [_gram.Rows.unit(torch.tensor(x)) for x in acts.values()]
    assert _gram.grid_pays(rows)  # the one-pass path is the one under test
    if tiny_budget:
        from gpugraph._util import memory as _memory

        monkeypatch.setattr(_memory, "budget", lambda device: 4096)  # one row of every layer a block
    knn = gg.similarity_matrix(acts, measure="mutual_knn").values  # k None: the default 10, never the grid
    assert knn[0, 1] == pytest.approx(gg.mutual_knn(acts["l60"], acts["l90"], k=10), abs=1e-12)
    for a, b in ((acts, None), (acts, other)):
        right = acts if b is None else b
        lsim = gg.similarity_matrix(a, b, measure="lsim").values
        ck = gg.similarity_matrix(a, b, measure="cka").values
        np.testing.assert_allclose(lsim, [[dense_lsim(p, q) for q in right.values()] for p in a.values()], atol=1e-12)
        np.testing.assert_allclose(ck, [[numpy_cka(p, q) for q in right.values()] for p in a.values()], atol=1e-12)


def test_a_grid_names_the_layer_whose_adjacency_row_is_zero():
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(40, 80)))
    x[0], x[1:, 0] = 0.0, 0.0
    x[0, 0] = 1.0  # sample 0 is orthogonal to every other sample
    acts = {"fine": rng.normal(size=(40, 80)), "lonely": x}
    assert _gram.grid_pays([_gram.Rows.unit(torch.tensor(v)) for v in acts.values()])
    with pytest.raises(ValueError, match=r"adjacency row is zero.*'lonely'"):
        gg.similarity_matrix(acts)


@pytest.mark.parametrize("d", [3, 60])  # pairs one at a time (feature form); one pass over the grid
def test_centred_lsim_is_dense_lsim_of_the_centred_features(d):
    rng = np.random.default_rng(d)
    base = np.abs(rng.normal(size=(40, 3))) + 2.0  # a large common component, as after a ReLU
    acts = {
        "a": base @ np.abs(rng.normal(size=(3, d))),
        "b": np.abs(base @ rng.normal(size=(3, d + 1))) + 1.0,
        "c": rng.normal(size=(40, d)) + 5.0,
    }
    centred = {name: x - x.mean(axis=0) for name, x in acts.items()}
    assert _gram.grid_pays([_gram.Rows.unit(torch.tensor(x)) for x in acts.values()]) == (d == 60)
    m = gg.similarity_matrix(acts, measure="lsim", centre=True)
    ref = [[dense_lsim(p, q) for q in centred.values()] for p in centred.values()]
    np.testing.assert_allclose(m.values, ref, atol=1e-12)
    assert m.params["centre"] is True
    assert gg.layer_similarity(acts["a"], acts["b"], centre=True) == pytest.approx(ref[0][1], abs=1e-12)
    assert abs(gg.layer_similarity(acts["a"], acts["b"]) - ref[0][1]) > 1e-3  # centring changes the answer here


def test_centre_errors():
    x = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match="centre=True applies to dense LSim"):
        gg.layer_similarity(x, x, k=3, centre=True)
    with pytest.raises(ValueError, match="centre=True applies to dense LSim"):
        gg.similarity_matrix({"a": x}, measure="cka", centre=True)
    y = x.copy()
    y[5] = (y.sum(axis=0) - y[5]) / 19  # the mean of the other 19, so the mean of all 20
    with pytest.raises(ValueError, match="row 5 of x2 equals the mean"):
        gg.layer_similarity(x, y, centre=True)


@pytest.mark.parametrize("d", [4, 40])  # a pair at a time; one pass over the U-centred Grams
def test_unbiased_cka_grid_equals_the_u_statistic(d):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, d))
    acts = {
        "a": x,
        "b": x @ rng.normal(size=(d, d + 2)) + rng.normal(size=(8, d + 2)),
        "c": rng.normal(size=(8, d - 1)) ** 2,
    }
    assert _gram.grid_pays([_gram.Rows(torch.tensor(v)) for v in acts.values()]) == (d == 40)
    m = gg.similarity_matrix(acts, measure="cka", unbiased=True)
    ref = [[u_statistic_cka(p, q) for q in acts.values()] for p in acts.values()]
    np.testing.assert_allclose(m.values, ref, atol=1e-12)
    assert m.params == {"k": None, "unbiased": True}
    with pytest.raises(ValueError, match="unbiased=True is an estimator of CKA"):
        gg.similarity_matrix(acts, measure="lsim", unbiased=True)


@pytest.mark.parametrize("scale", [1e20, 1e-23])
def test_similarities_of_rows_of_extreme_magnitude(scale):
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(50, 6))
    x2 = np.tanh(x1 @ rng.normal(size=(6, 4)))
    big = torch.tensor([[1e20, 1e20], [1e20, -1e20], [1e20, 0.9e20], [1e20, 0.0]])
    assert gg.layer_similarity(big, big) == pytest.approx(1.0, abs=1e-12)  # was -1
    t1 = (torch.tensor(x1) * scale).float()
    t2 = (torch.tensor(x2) * scale).float()
    ref1 = t1.double().numpy() / scale  # the float32 values, rescaled exactly enough
    ref2 = t2.double().numpy() / scale
    assert gg.layer_similarity(t1, t2) == pytest.approx(dense_lsim(ref1, ref2), abs=1e-6)
    assert gg.cka(t1, t2) == pytest.approx(numpy_cka(ref1, ref2), abs=1e-6)
    assert gg.cka(t1, t2, unbiased=True) == pytest.approx(gg.cka(ref1, ref2, unbiased=True), abs=1e-6)
    huge = torch.tensor(x1) * 1e200  # float64 whose squares overflow
    assert gg.cka(huge, x2) == pytest.approx(numpy_cka(x1, x2), abs=1e-12)
    assert gg.layer_similarity(huge, x2) == pytest.approx(dense_lsim(x1, x2), abs=1e-12)


@pytest.mark.parametrize(
    "x1,kwargs,match",
    [
        (torch.ones(10, 3), {}, r"x1 is the same for every sample \(constant features\).* CKA is 0 / 0"),
        (torch.ones(10, 3), {"unbiased": True}, r"x1 is the same for every sample \(constant features\)"),
        (torch.randn(1, 3), {}, r"at least 2 samples to compare representations, got N=1"),
        (torch.randn(3, 3), {"unbiased": True}, r"at least 4 samples .* got N=3"),
    ],
)
def test_cka_refuses_what_it_cannot_measure(x1, kwargs, match):
    x2 = torch.randn(len(x1), 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        gg.cka(x1, x2, **kwargs)


def test_similarity_errors():
    with pytest.raises(ValueError, match="same samples: x1 has N=10, x2 has N=12"):
        gg.layer_similarity(torch.randn(10, 3), torch.randn(12, 3))
    with pytest.raises(ValueError, match="measure must be one of"):
        gg.similarity_matrix({"a": torch.randn(10, 3)}, measure="svcca")
    with pytest.raises(ValueError, match=r"layer .b. of acts_b has N=11, expected N=10"):
        gg.similarity_matrix({"a": torch.randn(10, 3)}, {"b": torch.randn(11, 3)})
    with pytest.raises(TypeError, match="non-empty mapping"):
        gg.similarity_matrix({})
    with pytest.raises(ValueError, match="layer 'c' of acts_a has N=9, expected N=10"):
        gg.similarity_matrix({"a": torch.randn(10, 3), "b": torch.randn(10, 2), "c": torch.randn(9, 3)})
    with pytest.raises(ValueError, match=r"layer 'b' of acts_b must be 2-D \(N, D\), got shape \(10,\)"):
        gg.similarity_matrix({"a": torch.randn(10, 3)}, {"b": torch.randn(10)})
    with pytest.raises(ValueError, match="k=5 has no meaning for measure='cka'"):
        gg.similarity_matrix({"a": torch.randn(10, 3)}, measure="cka", k=5)


def test_motif_curve_counts_and_share():
    x, labels = clustered(n=200, d=6, classes=3, seed=4)
    noise = torch.randn(200, 6, generator=torch.Generator().manual_seed(4))
    curve = gg.motif_curve({"clustered": x, "noise": noise}, labels, k=5, n=100, repeats=2)
    parts = subsets(200, 100, 2, 0)
    c = gg.motifs(gg.knn_graph(x[parts[0]], 5), labels[parts[0]])
    assert curve.values[0, 0] == pytest.approx(c["same"] / sum(c.values()))
    assert curve.mean[0] > curve.mean[1]
    assert set(curve.params["counts"]["noise"]) == {"same", "pair", "distinct"}


def _dense_lsim_by_definition(x1: torch.Tensor, x2: torch.Tensor) -> float:
    """The N x N definition in float64: cosine graphs with a zero diagonal, row cosines."""

    def adjacency(x):
        u = x.double() / x.double().norm(dim=1, keepdim=True)
        s = u @ u.T
        s.fill_diagonal_(0.0)
        return s

    a, b = adjacency(x1), adjacency(x2)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())


@pytest.mark.parametrize("eps", [1e-2, 1e-5, 1e-8, 1e-12])
def test_dense_lsim_of_nearly_orthogonal_samples_has_no_cancellation(eps):
    # |A_i|^2 = sum_j S_ij^2 - 1 cancels when the samples are nearly orthogonal: at eps = 1e-8
    # the old form was 0.37 off the definition, or NaN
    g = torch.Generator().manual_seed(int(-np.log10(eps)))
    x1 = torch.eye(8, dtype=torch.float64) + eps * torch.randn(8, 8, generator=g, dtype=torch.float64)
    x2 = torch.eye(8, dtype=torch.float64) + eps * torch.randn(8, 8, generator=g, dtype=torch.float64)
    want = _dense_lsim_by_definition(x1, x2)
    assert gg.layer_similarity(x1, x2) == pytest.approx(want, abs=1e-9)
    grid = gg.similarity_matrix({"a": x1, "b": x2}, measure="lsim").values
    assert grid[0, 1] == pytest.approx(want, abs=1e-9)


def test_dense_lsim_refuses_a_sample_orthogonal_to_all_others():
    with pytest.raises(ValueError, match="adjacency row is zero in one graph"):
        gg.layer_similarity(torch.eye(6, dtype=torch.float64), torch.randn(6, 3))


def test_knn_lsim_refuses_a_zero_adjacency_row_as_dense_lsim_does():
    # every neighbour of every node at similarity 0: the old kNN path returned NaN
    with pytest.raises(ValueError, match=r"node 0's row of the kNN adjacency is zero in one graph"):
        gg.layer_similarity(torch.eye(6), torch.eye(6), k=2)


def _unbiased_cka_by_definition(x1: np.ndarray, x2: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC written out on N x N Gram matrices of centred columns,
    in float64 (the estimator does not change when the columns are shifted)."""

    def hsic(gram1, gram2):
        n = len(gram1)
        k, m = gram1.copy(), gram2.copy()
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(m, 0.0)
        one = np.ones(n)
        return (
            np.trace(k @ m)
            + (one @ k @ one) * (one @ m @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * one @ k @ m @ one
        ) / (n * (n - 3))

    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    k1, k2 = c1 @ c1.T, c2 @ c2.T
    return hsic(k1, k2) / np.sqrt(hsic(k1, k1) * hsic(k2, k2))


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e3, 1e4])
def test_unbiased_cka_keeps_its_digits_under_a_common_offset(offset):
    # post-ReLU features share a large offset; the old estimator lost 1e-2 relative at 1e3
    # and refused at 1e4 ("not positive"), ckatorch keeps 1e-13..1e-10
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 10))
    b = a @ rng.normal(size=(10, 10)) + 0.5 * rng.normal(size=(300, 10))
    want = _unbiased_cka_by_definition(a, b)
    acc = gg.MinibatchCKA()
    acc.update(a + offset, b + offset)
    grid = gg.similarity_matrix({"a": a + offset, "b": b + offset}, measure="cka", unbiased=True).values
    for got in (gg.cka(a + offset, b + offset, unbiased=True), acc.compute(), grid[0, 1]):
        assert got == pytest.approx(want, rel=1e-10)


def test_unbiased_cka_refuses_a_constant_layer_as_the_plug_in_estimator_does():
    x = np.random.default_rng(1).normal(size=(20, 3))
    for unbiased in (False, True):
        with pytest.raises(ValueError, match="x1 is the same for every sample"):
            gg.cka(np.full((20, 4), 2.5), x, unbiased=unbiased)
    with pytest.raises(ValueError, match="is the same for every sample"):
        gg.similarity_matrix({"c": np.full((20, 4), 2.5), "x": x}, measure="cka", unbiased=True)
    acc = gg.MinibatchCKA()  # a constant minibatch adds nothing; only a constant whole is refused
    acc.update(np.full((20, 4), 2.5), x)
    with pytest.raises(ValueError, match="not positive"):
        acc.compute()
    acc.update(x[:, :2] * 3, x)
    assert 0 < acc.compute() <= 1


def test_a_similarity_grid_stays_within_its_budget_on_memory_mapped_layers(tmp_path):
    # 3 memory-mapped float16 layers of 1500 x 8000 (24 MB each on disk, 96 MB as float64):
    # the grid used to read every layer whole, as float64, once per row block, whatever the
    # budget; now it holds the budget's row block of every layer's M and one row block and
    # one column block of a layer's rows. Its own peak (the high-water mark reset before the
    # call) stays within the budget, the mapped pages and a little slack.
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"l{i}.npy"
        np.save(path, rng.normal(size=(1500, 8000)).astype(np.float16))
        paths.append(str(path))
    budget = 16 << 20
    setup = f"""
        import numpy as np, gpugraph as gg
        from gpugraph._util import memory as _memory
        from gpugraph.similarity import gram as _gram
        _memory.budget = lambda device: {budget}
        acts = {{f"l{{i}}": np.load(p, mmap_mode="r") for i, p in enumerate({paths!r})}}
        small = {{k: np.asarray(v[:40]) for k, v in acts.items()}}
        gg.similarity_matrix(small)
        assert _gram.grid_pays([_gram.Rows.unit(v) for v in acts.values()])  # the grid is what runs
    """
    grown, value = peak_growth(setup, "gg.similarity_matrix(acts).values.round(6).tolist()")
    mapped = 3 * 1500 * 8000 * 2
    assert grown < budget + mapped + (24 << 20), grown
    x = [np.load(p).astype(np.float64) for p in paths]
    assert eval(value)[0][1] == pytest.approx(dense_lsim(x[0], x[1]), abs=2e-6)
