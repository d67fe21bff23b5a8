"""Model stitching (gg.stitch) and transferability ranking (gg.rank_sources)."""

import re

import numpy as np
import pytest
import torch
from torch import nn

import gpugraph as gg
from gpugraph.models.training import accuracy, fit


def blobs(n=240, classes=3, d=6, seed=0, length=None):
    """Separable classes: class centres plus noise; as (N, 1, length) signals when length is set."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = 3 * torch.randn(classes, d, generator=g)
    x = centres[y] + torch.randn(n, d, generator=g)
    if length is not None:
        x = x[:, :, None].expand(n, d, length).contiguous() + 0.1 * torch.randn(n, d, length, generator=g)
    return x, y


class ConvNet(nn.Module):
    def __init__(self, c_in=6, width=8, classes=3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, width, 3, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.body(x)))


def trained_pair(seed_a=0, seed_b=1):
    x, y = blobs(length=5)
    nets = []
    for seed in (seed_a, seed_b):
        torch.manual_seed(seed)
        nets.append(fit(ConvNet(), x, y, epochs=30, seed=seed, log=None))
    return nets, x, y


def test_stitched_forward_is_the_hand_composition_and_the_stitch_alone_learns():
    (bottom, top), x, y = trained_pair()
    bottom.train()
    top.eval()
    top.body[4].train()  # a mixed state: each module's own mode must come back
    state_b = {k: v.clone() for k, v in bottom.state_dict().items()}
    state_t = {k: v.clone() for k, v in top.state_dict().items()}
    top.fc.weight.requires_grad_(False)  # a user's own frozen parameter stays frozen
    for p in (*bottom.parameters(), *top.parameters()):
        p.grad = None
    rng = torch.get_rng_state()
    s = gg.stitch(bottom, top, "body.2", x, y, epochs=3, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded on its own generators
    # modes, flags and every weight and BN statistic of both networks as they were
    assert bottom.training and all(m.training for m in bottom.modules())
    assert not top.training and top.body[4].training and not top.body[1].training
    assert not top.fc.weight.requires_grad and top.fc.bias.requires_grad
    assert all(p.requires_grad for p in bottom.parameters())
    assert all(p.grad is None for p in (*bottom.parameters(), *top.parameters()))  # frozen while it trained
    for net, state in ((bottom, state_b), (top, state_t)):
        for key, value in net.state_dict().items():
            assert torch.equal(value, state[key]), key
    assert [n for n, _ in s.named_parameters()] == ["stitch.weight", "stitch.bias"]
    assert isinstance(s.stitch, nn.Conv1d) and s.stitch.kernel_size == (1,)
    assert len(s.losses) == 3 and s.losses[-1] < s.losses[0]
    # the forward by hand: bottom's first block (eval), the 1x1 stitch, top's second block and head (eval)
    bottom.eval()
    top.eval()
    with torch.no_grad():
        h = s.stitch(bottom.body[:3](x))
        ref = top.fc(top.pool(top.body[3:](h)))
    bottom.train()
    top.body[4].train()
    with torch.no_grad():
        got = s(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert bottom.training and top.body[4].training and not top.training  # a forward restores the modes too


def test_stitching_a_network_into_itself_recovers_its_accuracy():
    (net, _), x, y = trained_pair()
    own = accuracy(net, x, y)
    s = gg.stitch(net, net, "body.5", x, y, epochs=15, lr=1e-2, init="random", seed=0)
    assert own > 0.9 and accuracy(s, x, y) >= own - 0.05


def test_the_least_squares_start_matches_numpy_and_is_the_identity_for_a_network_with_itself():
    (bottom, top), x, y = trained_pair()
    s = gg.stitch(bottom, top, "body.2", x, y, epochs=0)
    bottom.eval()
    top.eval()
    with torch.no_grad():
        a = bottom.body[:3](x).permute(0, 2, 1).reshape(-1, 8).double().numpy()
        b = top.body[:3](x).permute(0, 2, 1).reshape(-1, 8).double().numpy()
    w, *_ = np.linalg.lstsq(np.hstack([a, np.ones((len(a), 1))]), b, rcond=None)
    np.testing.assert_allclose(s.stitch.weight[:, :, 0].detach().numpy(), w[:-1].T, atol=1e-5)
    np.testing.assert_allclose(s.stitch.bias.detach().numpy(), w[-1], atol=1e-5)
    own = gg.stitch(top, top, "body.5", x, y, epochs=0)
    with torch.no_grad():
        torch.testing.assert_close(own(x), top(x), rtol=1e-4, atol=1e-4)


def test_stitching_flat_features_uses_a_linear_map():
    (bottom, top), x, y = trained_pair()
    s = gg.stitch(bottom, top, "pool", x, y, epochs=10, lr=1e-2)
    assert isinstance(s.stitch, nn.Linear) and s.stitch.in_features == s.stitch.out_features == 8
    assert accuracy(s, x, y) > 0.9


def test_stitch_errors():
    (bottom, top), x, y = trained_pair()
    with pytest.raises(ValueError, match=re.escape("no module 'body.9'")):
        gg.stitch(bottom, top, "body.9", x, y)
    with pytest.raises(ValueError, match="same spatial shape"):
        gg.stitch(bottom, top, "body.2", x, y, top_layer="pool")
    with pytest.raises(ValueError, match="one integer class label"):
        gg.stitch(bottom, top, "body.2", x, y.float())
    with pytest.raises(ValueError, match="epochs must be a non-negative integer"):
        gg.stitch(bottom, top, "body.2", x, y, epochs=-1)
    with pytest.raises(ValueError, match="init must be 'lstsq' or 'random'"):
        gg.stitch(bottom, top, "body.2", x, y, init="zeros")


class Fixed(nn.Module):
    """A source whose features are w * (the label part of x) + (the noise part of x)."""

    def __init__(self, w: float, classes: int):
        super().__init__()
        self.w, self.classes = w, classes
        self.head = nn.Linear(2 * classes, 2)

    def forward(self, x):
        label, noise = x[:, : self.classes], x[:, self.classes :]
        return self.head(torch.cat([self.w * label, noise], dim=1))


def test_rank_sources_orders_sources_by_how_much_label_signal_they_carry():
    g = torch.Generator().manual_seed(0)
    classes, n = 4, 200
    y = torch.arange(n) % classes
    x = torch.cat([nn.functional.one_hot(y, classes).float(), torch.randn(n, classes, generator=g)], dim=1)
    weights = {"strong": 3.0, "medium": 1.0, "weak": 0.3, "none": 0.0}
    sources = {name: Fixed(w, classes) for name, w in weights.items()}
    r = gg.rank_sources(sources, (x, y), k=5)
    for measure in ("lsim", "cka", "modularity", "motifs", "knn_accuracy"):
        assert r.order(measure) == list(weights), (measure, r.scores)
    tau = r.kendall({"strong": 0.9, "medium": 0.8, "weak": 0.5, "none": 0.3})
    assert all(t == pytest.approx(1.0) for t in tau.values())
    # the scores are the measures on the features: recomputed by hand for one source
    feats = torch.cat([3.0 * x[:, :classes], x[:, classes:]], dim=1).double()
    onehot = nn.functional.one_hot(y).double()
    assert r.scores["strong"]["lsim"] == pytest.approx(gg.layer_similarity(feats, onehot), abs=1e-12)
    idx = gg.knn_graph(feats, 5).indices
    votes = np.array([np.bincount(y[i].numpy(), minlength=classes).argmax() for i in idx])
    assert r.scores["strong"]["knn_accuracy"] == pytest.approx(float((votes == y.numpy()).mean()))
    assert list(r.to_pandas().columns) == r.measures and "strong" in r.table()


def test_rank_sources_reads_a_named_layer_and_restores_modes():
    (a, b), x, y = trained_pair()
    a.train()
    r = gg.rank_sources({"a": a, "b": b}, (x.numpy(), y.numpy()), layer="pool", measures=("cka",))
    assert a.training and r.measures == ["cka"] and 0 < r.scores["a"]["cka"] <= 1


def test_rank_sources_errors():
    x, y = blobs()
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="unknown measure"):
        gg.rank_sources({"a": net}, (x, y), measures=("accuracy",))
    with pytest.raises(TypeError, match="non-empty mapping"):
        gg.rank_sources([net], (x, y))
    with pytest.raises(ValueError, match="one integer class per sample"):
        gg.rank_sources({"a": net}, (x, y.float()))
    with pytest.raises(ValueError, match="at least two classes"):
        gg.rank_sources({"a": net}, (x, torch.zeros(len(x), dtype=torch.int64)))
    with pytest.raises(ValueError, match=re.escape("no nn.Linear")):
        gg.rank_sources({"a": nn.Sequential(nn.ReLU())}, (x, y))
    with pytest.raises(ValueError, match="was not computed"):
        gg.rank_sources({"a": net}, (x, y), measures=("cka",)).order("lsim")


def test_layer_identification_paired_comparison_by_hand(monkeypatch):
    # benchmarks/sanity_check.py reads two measures on the same picks: 3 networks, ordered
    # pairs (6), 2 layers; A is right on every pick, B only on layer 0
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    sanity = importlib.import_module("sanity_check")
    hits_a = np.ones((3, 3, 2), dtype=bool)
    hits_b = hits_a.copy()
    hits_b[..., 1] = False
    for h in (hits_a, hits_b):
        h[np.arange(3), np.arange(3)] = False
    only_a, only_b, p, diff, (lo, hi) = sanity.paired(hits_a, hits_b, layers=2, ordered=True, resamples=200)
    assert (only_a, only_b) == (6, 0)
    assert p == pytest.approx(2 * 0.5**6)  # exact two-sided McNemar: binomial(6, 1/2)
    assert diff == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    assert sanity.paired(hits_a, hits_a, layers=2, ordered=False)[:4] == (0, 0, 1.0, 0.0)
    sys.modules.pop("sanity_check", None)


def test_transfer_holm_adjustment_and_leak_flags_by_hand(monkeypatch):
    # benchmarks/transfer.py: Holm's step-down on 4 p-values, sorted 0.01, 0.03, 0.04, 0.5:
    # 4 x 0.01, max(., 3 x 0.03), max(., 2 x 0.04), max(., 0.5), back in the given order
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    transfer = importlib.import_module("transfer")
    assert transfer.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert transfer.holm([0.3, 0.2]) == pytest.approx([0.4, 0.4])
    assert transfer.leaky("all 10 digits") and transfer.leaky("0-6, 15 epochs")
    assert not transfer.leaky("0-4, 1 epoch") and not transfer.leaky("untrained")
    assert len(transfer.SOURCES) + len(transfer.UNTRAINED) >= 20
    sys.modules.pop("transfer", None)


def test_stitching_partial_and_within_layer_correlations_by_hand(monkeypatch):
    # benchmarks/stitching.py against the textbook formula of a partial correlation, on ranks:
    # (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)) with Spearman's r
    import importlib
    import sys
    from pathlib import Path

    from scipy.stats import spearmanr

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    stitching = importlib.import_module("stitching")
    rng = np.random.default_rng(0)
    z = rng.normal(size=40)
    x, y = z + rng.normal(size=40), z + 0.5 * rng.normal(size=40)
    r = lambda a, b: spearmanr(a, b).statistic  # noqa: E731
    formula = (r(x, y) - r(x, z) * r(y, z)) / np.sqrt((1 - r(x, z) ** 2) * (1 - r(y, z) ** 2))
    assert stitching.partial_rank(x, y, z) == pytest.approx(formula, abs=1e-12)
    # within a layer: at depth 0 the predictor follows accuracy (+1), at depth 1 it opposes it (-1)
    points = [
        {"bottom": b, "depth": d, "p": v, "stitched_accuracy": a}
        for b, d, v, a in [
            ("a", 0, 1, 0.1),
            ("b", 0, 2, 0.2),
            ("c", 0, 3, 0.3),
            ("a", 1, 3, 0.5),
            ("b", 1, 2, 0.6),
            ("c", 1, 1, 0.7),
        ]
    ]
    assert stitching.within_layer(points, "p") == pytest.approx(0.0)
    assert stitching.within_layer(points[:3], "p") == pytest.approx(1.0)
    sys.modules.pop("stitching", None)
