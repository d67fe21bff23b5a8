"""Curve studies: the permutation null of modularity, bootstrap intervals, the training
monitor and adversarial curves (issue 15)."""

import json

import numpy as np
import pytest
import torch
from helpers import DEVICES, clustered
from networkx.algorithms.community import modularity as nx_modularity

import gpugraph as gg
from gpugraph.graph.edges import edge_rows
from gpugraph.graph.modularity import _permuted_sums_torch, edge_mass
from gpugraph.studies.curves import subsets


def _nx_null(g, labels, permutations, seed, mode="mean", weighted=True):
    """The reference: one networkx modularity per permutation, the same stream of NumPy
    permutations as gpugraph's documented one (labels already 0..C-1)."""
    nxg = g.to_networkx(mode, weighted=weighted)
    nxg.add_nodes_from(range(g.n))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(permutations):
        perm = rng.permutation(labels)
        groups = [set(np.flatnonzero(perm == c).tolist()) for c in np.unique(labels)]
        out.append(nx_modularity(nxg, groups, weight="weight" if weighted else None))
    return np.array(out)


@pytest.mark.parametrize("mode,weighted", [("mean", True), ("max", False), ("mutual", True)])
def test_null_samples_equal_a_networkx_loop_of_permutations(mode, weighted):
    x, y = clustered(n=90, d=6, classes=3, spread=1.5, seed=4)
    g = gg.knn_graph(x, k=4)
    r = gg.modularity_null(g, y, permutations=150, seed=7, mode=mode, weighted=weighted)
    ref = _nx_null(g, y, 150, 7, mode, weighted)
    np.testing.assert_allclose(r.samples, ref, atol=1e-12)
    assert r.q == pytest.approx(
        nx_modularity(
            g.to_networkx(mode, weighted=weighted),
            [set(np.flatnonzero(y == c).tolist()) for c in range(3)],
            weight="weight" if weighted else None,
        ),
        abs=1e-12,
    )
    assert r.mean == pytest.approx(ref.mean(), abs=1e-12)
    assert r.std == pytest.approx(ref.std(ddof=1), abs=1e-12)
    assert r.z == pytest.approx((r.q - ref.mean()) / ref.std(ddof=1), rel=1e-9)
    assert r.p == (1 + (ref >= r.q).sum()) / 151


def test_null_mean_and_std_agree_with_an_independent_stream():
    # a different seed for the reference: the two estimates agree within sampling error
    x, y = clustered(n=120, d=6, classes=4, spread=2.0, seed=1)
    g = gg.knn_graph(x, k=5)
    r = gg.modularity_null(g, y, permutations=600, seed=0)
    ref = _nx_null(g, y, 600, 12345)
    se = ref.std(ddof=1) / np.sqrt(600)
    assert abs(r.mean - ref.mean()) < 5 * np.sqrt(2) * se
    assert r.std == pytest.approx(ref.std(ddof=1), rel=0.15)


def test_null_z_is_large_for_true_labels_and_small_for_random_ones():
    x, y = clustered(n=400, d=16, classes=4, seed=2)
    g = gg.knn_graph(x, k=5)
    true = gg.modularity_null(g, y, permutations=200)
    assert true.z > 20 and true.p == 1 / 201
    shuffled = np.random.default_rng(9).permutation(y)
    zs = [gg.modularity_null(g, np.random.default_rng(s).permutation(y), permutations=200, seed=s).z for s in range(5)]
    assert all(abs(z) < 4 for z in zs) and abs(np.mean(zs)) < 2
    r = gg.modularity_null(g, shuffled, permutations=200)
    assert 0.01 < r.p <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_null_is_seeded_and_the_same_on_every_path(device):
    x, y = clustered(n=200, d=8, classes=5, seed=3)
    g = gg.knn_graph(x.to(device), k=4)
    a = gg.modularity_null(g, y, permutations=130, seed=5)  # 130: three passes of 64 lanes
    b = gg.modularity_null(g, y, permutations=130, seed=5)
    np.testing.assert_array_equal(a.samples, b.samples)
    c = gg.modularity_null(g, y, permutations=130, seed=6)
    assert not np.array_equal(a.samples, c.samples)
    # the torch statement of the per-permutation sums, against the compiled pass
    cpu = g.to("cpu")
    both, s_out, s_in, two_m = edge_mass(cpu, "mean", True, "keep")
    edges = edge_rows(cpu, "mean")
    codes = np.stack([np.random.default_rng(1).permutation(y) for _ in range(70)], axis=1).astype(np.uint8)
    from gpugraph.kernels.graph_cpu import permuted_sums

    w1, o1, i1 = permuted_sums(
        edges.rows.numpy(), edges.cols.numpy(), both.numpy(), s_out.numpy(), s_in.numpy(), codes, 5
    )
    w2, o2, i2 = _permuted_sums_torch(edges, both, s_out, s_in, torch.from_numpy(codes.astype(np.int64)), 5)
    np.testing.assert_allclose(w1, w2, rtol=1e-12)
    np.testing.assert_allclose(o1, o2, rtol=1e-12)
    np.testing.assert_allclose(i1, i2, rtol=1e-12)
    np.testing.assert_allclose(o1, i1, rtol=1e-12)  # undirected: out- and in-strengths agree
    assert o1.sum(axis=1) == pytest.approx(np.full(70, two_m))


def test_null_of_a_single_class_has_no_z():
    x, _ = clustered(n=50, d=4, seed=0)
    r = gg.modularity_null(gg.knn_graph(x, k=3), np.zeros(50, dtype=int), permutations=20)
    assert r.std == 0 and np.isnan(r.z) and r.p == 1.0


@pytest.mark.parametrize("permutations", [0, -3, 2.5, True, "100"])
def test_null_rejects_a_bad_permutation_count(permutations):
    x, y = clustered(n=40, d=4, seed=0)
    with pytest.raises(ValueError, match="permutations must be a positive integer"):
        gg.modularity_null(gg.knn_graph(x, k=3), y, permutations=permutations)


def test_null_rejects_labels_of_the_wrong_length():
    x, y = clustered(n=40, d=4, seed=0)
    with pytest.raises(ValueError, match="labels"):
        gg.modularity_null(gg.knn_graph(x, k=3), y[:-1], permutations=10)


# ---- the curve's null and bootstrap interval ----------------------------------------------


def _layers(n=240, seed=0):
    x, y = clustered(n=n, d=12, classes=3, seed=seed)
    noise = torch.randn(n, 12, generator=torch.Generator().manual_seed(seed))
    return {"noise": noise, "mixed": noise + 0.4 * x, "clean": x}, y


def test_curve_null_gives_each_point_its_z_and_keeps_the_values():
    acts, y = _layers()
    plain = gg.modularity_curve(acts, y, k=4, n=60, repeats=3)
    curve = gg.modularity_curve(acts, y, k=4, n=60, repeats=3, null=50)
    np.testing.assert_allclose(curve.values, plain.values, atol=1e-12)
    assert plain.null is None and plain.z is None
    # each point is modularity_null on that subset's graph, seeded by seed + subset
    parts = subsets(240, 60, 3, 0)
    for i, idx in enumerate(parts):
        r = gg.modularity_null(gg.knn_graph(acts["clean"][idx], k=4), y[idx], permutations=50, seed=i)
        assert curve.null["z"][i, 2] == pytest.approx(r.z, rel=1e-9)
        assert curve.null["p"][i, 2] == r.p
    assert curve.z[2] > 10 and abs(curve.z[0]) < 4
    assert "z" in curve.table() and "50 label permutations" in curve.table()
    back = gg.LayerCurve.from_json(curve.to_json())
    np.testing.assert_array_equal(back.null["z"], curve.null["z"])
    assert back.null["permutations"] == 50
    assert list(curve.to_pandas().columns) == ["layer", "mean", "std", "delta", "z", "redundant"]


def test_curve_null_is_drawn_as_a_band(tmp_path):
    acts, y = _layers()
    curve = gg.modularity_curve(acts, y, k=4, n=60, repeats=2, null=20)
    ax = curve.plot()
    assert any("null" in t.get_text() for t in ax.get_legend().get_texts())
    assert curve.plot(tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("null", [-1, 2.0, True])
def test_curve_null_must_be_a_count(null):
    acts, y = _layers()
    with pytest.raises(ValueError, match="null must be a number of permutations"):
        gg.modularity_curve(acts, y, n=60, repeats=2, null=null)


def test_bootstrap_interval_matches_scipy():
    from scipy.stats import bootstrap

    values = np.random.default_rng(3).normal(size=(8, 3)) * [0.01, 0.05, 0.1] + [0.2, 0.4, 0.6]
    curve = gg.LayerCurve(["a", "b", "c"], values)
    ci = curve.ci(level=0.9, resamples=40_000)
    for j in range(3):
        ref = bootstrap(
            (values[:, j],), np.mean, confidence_level=0.9, n_resamples=40_000, method="percentile", random_state=1
        ).confidence_interval
        assert ci[j, 0] == pytest.approx(ref.low, abs=0.02 * values[:, j].std())
        assert ci[j, 1] == pytest.approx(ref.high, abs=0.02 * values[:, j].std())
        assert ci[j, 0] < values[:, j].mean() < ci[j, 1]


def test_bootstrap_interval_errors():
    with pytest.raises(ValueError, match="at least 2 subsets"):
        gg.LayerCurve(["a"], [[0.3]]).ci()
    curve = gg.LayerCurve(["a"], [[0.3], [0.4]])
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        curve.ci(level=95)
    with pytest.raises(ValueError, match="resamples must be a positive integer"):
        curve.ci(resamples=0)


def test_curves_over_other_layers_are_not_drawn_together():
    a, b = gg.LayerCurve(["x", "y"], [[0.1, 0.2]]), gg.LayerCurve(["x", "z"], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="only curves over the same layers"):
        a.plot(others={"b": b})


# ---- the training monitor -------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self, fail_at=None):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1))
        self.head = torch.nn.Linear(16, 3)
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return self.head(self.body(x))


def test_monitor_writes_a_line_per_measured_epoch_and_survives_a_failing_model(tmp_path):
    x, y = clustered(n=120, d=12, classes=3, seed=5)
    model = _Net()
    monitor = gg.CurveMonitor((x, y), every=2, out=tmp_path, n=40, repeats=2, k=3)
    model.train()
    for epoch in range(5):
        curve = monitor(model, epoch)
        assert (curve is None) == (epoch % 2 == 1)
        assert model.training
    lines = (tmp_path / "curves.jsonl").read_text().splitlines()
    assert len(lines) == 3
    read = gg.CurveMonitor.read(tmp_path)
    assert [e for e, _ in read] == [0, 2, 4]
    np.testing.assert_allclose(read[2][1].values, monitor.history[2][1].values)
    # the same curve as capture + modularity_curve by hand
    ref = gg.modularity_curve(gg.capture(model, (x, y)), n=40, repeats=2, k=3)
    np.testing.assert_allclose(read[2][1].values, ref.values, atol=1e-12)
    # a model that raises: the exception propagates, modes and hooks are as before, the
    # finished epochs stay
    model.fail_at = model.calls + 1
    model.body.eval()  # a mixed state, kept
    with pytest.raises(RuntimeError, match="boom"):
        monitor(model, 6)
    assert model.training and not model.body.training and model.body[2].training is False
    assert not any(m._forward_hooks for m in model.modules())
    assert len((tmp_path / "curves.jsonl").read_text().splitlines()) == 3
    model.fail_at = None
    gg.CurveMonitor((x, y), every=2, out=tmp_path, n=40, repeats=2, k=3)(model, 8)  # a new monitor appends
    assert [e for e, _ in gg.CurveMonitor.read(tmp_path / "curves.jsonl")] == [0, 2, 4, 8]
    fig = monitor.plot(tmp_path / "epochs.png")
    assert fig.read_bytes()[:4] == b"\x89PNG"


def test_monitor_reports_a_cut_line_and_bad_arguments(tmp_path):
    (tmp_path / "curves.jsonl").write_text('{"epoch": 0, "curve": {"layers": ["a"], "values": [[0.1]]}}\n{"epo')
    with pytest.raises(ValueError, match="line 2: not a JSON line"):
        gg.CurveMonitor.read(tmp_path)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        gg.CurveMonitor(None, every=0)
    with pytest.raises(ValueError, match="no curve yet"):
        gg.CurveMonitor(None).plot()


def test_fit_calls_the_monitor_after_every_epoch(tmp_path):
    from gpugraph.models.training import fit

    x, y = clustered(n=150, d=12, classes=3, seed=6)
    y = torch.as_tensor(y)
    monitor = gg.CurveMonitor((x, y), out=tmp_path, n=50, repeats=2, k=3)
    fit(_Net(), x, y, epochs=3, log=None, callback=monitor)
    assert [e for e, _ in gg.CurveMonitor.read(tmp_path)] == [0, 1, 2]


def test_lightning_callback_measures_at_the_end_of_each_training_epoch(monkeypatch, tmp_path):
    # Lightning is an optional extra, not installed here: a stand-in module with its Callback
    # base class checks the wiring (the hook Lightning calls, and the epoch it passes)
    import sys
    import types

    pytorch = types.ModuleType("lightning.pytorch")
    pytorch.Callback = type("Callback", (), {})
    monkeypatch.setitem(sys.modules, "lightning", types.ModuleType("lightning"))
    monkeypatch.setitem(sys.modules, "lightning.pytorch", pytorch)
    x, y = clustered(n=90, d=12, classes=3, seed=7)
    monitor = gg.CurveMonitor((x, y), out=tmp_path, n=30, repeats=2, k=3)
    callback = monitor.lightning_callback()
    assert isinstance(callback, pytorch.Callback)
    model = _Net()
    for epoch in range(2):
        callback.on_train_epoch_end(types.SimpleNamespace(current_epoch=epoch), model)
    assert [e for e, _ in gg.CurveMonitor.read(tmp_path)] == [0, 1]


def test_lightning_callback_without_lightning_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_lightning(name, *args, **kwargs):
        if name.startswith(("lightning", "pytorch_lightning")):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightning)
    with pytest.raises(ImportError, match="pip install lightning"):
        gg.CurveMonitor(None).lightning_callback()


# ---- adversarial examples -------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    from gpugraph.models.training import fit

    x, y = clustered(n=600, d=12, classes=3, spread=0.8, seed=8)
    y = torch.as_tensor(y)
    x = (x - x.min()) / (x.max() - x.min())  # inputs in [0, 1]
    torch.manual_seed(0)
    model = fit(_Net(), x, y, epochs=30, lr=1e-2, log=None)
    return model, x, y


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_stay_within_eps_and_bounds_and_lower_accuracy(trained, attack):
    model, x, y = trained
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    eps = 0.08
    run = gg.attacks.fgsm if attack == "fgsm" else gg.attacks.pgd
    hit = run(model, x, y, eps, bounds=(0.0, 1.0))
    assert (hit.x - x).abs().max() <= eps + 1e-6
    assert hit.x.min() >= 0 and hit.x.max() <= 1
    with torch.no_grad():
        model.eval()
        clean = model(x).argmax(1) == y
        adv = model(hit.x).argmax(1) == y
        model.train()
    assert clean.float().mean() > 0.9
    assert hit.clean_accuracy == pytest.approx(float(clean.float().mean()))
    assert hit.attacked_accuracy == pytest.approx(float(adv.float().mean()))
    assert hit.attacked_accuracy < hit.clean_accuracy - 0.2
    assert torch.equal(hit.mask, clean & ~adv)
    assert model.training
    assert all(
        (g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True)
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_pgd_beats_fgsm_and_fgsm_is_one_signed_step(trained):
    model, x, y = trained
    f = gg.attacks.fgsm(model, x, y, 0.05)
    p = gg.attacks.pgd(model, x, y, 0.05, steps=20)
    assert p.attacked_accuracy <= f.attacked_accuracy
    # FGSM by hand: x + eps sign(grad)
    model.eval()
    xr = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xr), y).backward()
    model.train()
    # per-batch mean losses scale the gradient, never its sign
    np.testing.assert_allclose(f.x.numpy(), (x + 0.05 * xr.grad.sign()).numpy(), atol=1e-6)


def test_attacked_curve_collapses_in_the_deep_layers(trained):
    model, x, y = trained
    hit = gg.attacks.pgd(model, x, y, 0.1, steps=20)
    keep = hit.mask
    assert keep.sum() >= 100
    layers = ["body.1", "head"]
    clean = gg.modularity_curve(gg.capture(model, (x[keep], y[keep]), layers=layers, include_input=True), n=None)
    attacked = gg.modularity_curve(gg.capture(model, (hit.x[keep], y[keep]), layers=layers, include_input=True), n=None)
    # the inputs moved by at most eps still look like their classes; the deeper the layer,
    # the more the attacked samples drift to the wrong class (measured: a gap of 0.10 at the
    # input, 0.18 at the head)
    gap = clean.mean - attacked.mean
    assert gap[-1] > gap[0] + 0.05 and attacked.mean[-1] < attacked.mean[0]


def test_attacked_curve_against_the_predicted_labels_stays_clustered(trained):
    model, x, y = trained
    hit = gg.attacks.pgd(model, x, y, 0.1, steps=20)
    model.eval()
    with torch.no_grad():
        reference = model(hit.x).argmax(1)
    model.train()
    assert torch.equal(hit.predicted, reference)
    assert torch.equal(hit.fooled, reference != y)
    keep = hit.mask
    assert torch.equal(hit.labels(y, "true"), y[keep])
    assert torch.equal(hit.labels(y, "predicted"), reference[keep])
    assert bool((hit.labels(y, "predicted") != y[keep]).all())  # every kept sample is fooled
    acts = gg.capture(model, (hit.x[keep], y[keep]), layers=["body.1", "head"])
    true = gg.modularity_curve(acts, hit.labels(y, "true"), n=None)
    predicted = gg.modularity_curve(acts, hit.labels(y, "predicted"), n=None)
    # the attacked samples sit among the class the model now gives them, the more so the
    # deeper the layer (measured: 0.57 / 0.59 against their predicted labels at body.1 /
    # head, 0.51 / 0.48 against the true ones)
    gain = predicted.mean - true.mean
    assert gain[-1] > 0.08 and gain[-1] > gain[0]
    with pytest.raises(ValueError, match='"true" or "predicted"'):
        hit.labels(y, "model")
    with pytest.raises(ValueError, match="the 600 labels the attack was run with"):
        hit.labels(y[:10])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"eps": 0}, ValueError, "eps must be a positive number"),
        ({"eps": 0.1, "steps": 0}, ValueError, "steps must be a positive integer"),
        ({"eps": 0.1, "alpha": -1.0}, ValueError, "alpha must be positive"),
        ({"eps": 0.1, "bounds": (0.5, 0.6)}, ValueError, "values outside bounds"),
        ({"eps": 0.1, "bounds": (1, 0)}, ValueError, "low < high"),
    ],
)
def test_attack_arguments_are_checked(trained, kwargs, error, match):
    model, x, y = trained
    with pytest.raises(error, match=match):
        gg.attacks.pgd(model, x, y, **kwargs)
    with pytest.raises(ValueError, match="integer labels"):
        gg.attacks.fgsm(model, x, y.float(), 0.1)


# ---- the command line -----------------------------------------------------------------


def test_cli_curve_draws_checkpoints_together_with_a_null_and_an_attack(tmp_path, trained, capsys):
    from gpugraph.tools.cli import main

    model, x, y = trained
    torch.save(model, tmp_path / "late.pt")
    torch.manual_seed(1)
    torch.save(_Net(), tmp_path / "early.pt")
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    args = ["--layers", "body.1,head", "--n", "60", "--repeats", "2", "--no-progress"]
    assert (
        main(
            [
                "curve",
                str(tmp_path / "early.pt"),
                str(tmp_path / "late.pt"),
                str(tmp_path / "data.npz"),
                *args,
                "--null",
                "30",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "== early" in out and "== late" in out and "30 label permutations" in out
    saved = json.loads((tmp_path / "a" / "curves.json").read_text())
    assert set(saved) == {"early", "late"} and saved["late"]["null"]["permutations"] == 30
    assert (tmp_path / "a" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        main(
            [
                "curve",
                str(tmp_path / "late.pt"),
                str(tmp_path / "data.npz"),
                *args,
                "--attack",
                "pgd",
                "--eps",
                "0.1",
                "--bounds",
                "0",
                "1",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pgd eps=0.1" in out and "== late clean" in out and "== late pgd (true labels)" in out
    saved = json.loads((tmp_path / "b" / "curves.json").read_text())
    assert set(saved) == {"late clean", "late pgd (true labels)", "late pgd (predicted labels)"}
    assert saved["late pgd (true labels)"]["mean"][-1] < saved["late clean"]["mean"][-1]
    assert saved["late pgd (predicted labels)"]["mean"][-1] > saved["late pgd (true labels)"]["mean"][-1]
    assert (
        main(
            [
                "curve",
                str(tmp_path / "late.pt"),
                str(tmp_path / "data.npz"),
                *args,
                "--attack",
                "fgsm",
                "--eps",
                "0.1",
                "--attack-labels",
                "predicted",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "c" / "curves.json").read_text())
    assert set(saved) == {"late clean", "late fgsm (predicted labels)"}
    assert main(["curve", str(tmp_path / "late.pt"), str(tmp_path / "data.npz"), "--attack", "fgsm"]) == 1
    assert "--attack needs --eps" in capsys.readouterr().err
