import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import TinyResNet, clustered, nx_reference_modularity, paper_adjacency

import gpugraph as gg
from gpugraph.studies.curves import subsets
from gpugraph.tools.cli import main


def test_curve_equals_modularity_layer_by_layer():
    x, labels = clustered(n=300, d=12, classes=3, seed=1)
    acts = {"a": x, "b": x * 2 + 0.3 * torch.randn(300, 12), "c": torch.randn(300, 5)}
    curve = gg.modularity_curve(acts, labels, k=4, n=100, repeats=3, seed=7)
    parts = subsets(300, 100, 3, 7)
    assert len({int(i) for p in parts for i in p}) == 300  # disjoint, together all samples
    for j, name in enumerate(acts):
        ref = [gg.modularity(gg.knn_graph(acts[name][p], k=4), labels[p]) for p in parts]
        np.testing.assert_allclose(curve.values[:, j], ref, atol=1e-12)
        assert curve.mean[j] == pytest.approx(np.mean(ref)) and curve.std[j] == pytest.approx(np.std(ref))
    whole = gg.modularity_curve(acts, labels, k=4, n=None)
    assert whole.values.shape == (1, 3)
    assert whole.mean[0] == pytest.approx(gg.modularity(gg.knn_graph(x, k=4), labels))


def networkx_curve(acts, labels, k, n, repeats, seed):
    """The paper's pipeline per layer and subset, written independently: float64 cosine,
    exact top-k by a full sort, (W + W^T)/2, networkx modularity."""
    labels = np.asarray(labels)
    parts = subsets(len(labels), n, repeats, seed)  # the subsets themselves: plain NumPy
    return np.array(
        [
            [
                nx_reference_modularity(paper_adjacency(np.asarray(x, dtype=np.float64)[p], k), labels[p])
                for x in acts.values()
            ]
            for p in parts
        ]
    )


def test_curve_equals_networkx_on_the_papers_construction():
    x, labels = clustered(n=240, d=10, classes=3, seed=2)
    acts = {
        "raw": x,
        "relu": torch.relu(x @ torch.randn(10, 16, generator=torch.Generator().manual_seed(1))),
        "noise": torch.randn(240, 6, generator=torch.Generator().manual_seed(2)),
    }
    curve = gg.modularity_curve(acts, labels, k=3, n=80, repeats=3, seed=4)
    ref = networkx_curve(acts, labels, 3, 80, 3, 4)
    np.testing.assert_allclose(curve.values, ref, atol=1e-6)  # float32 weights against float64
    assert curve.mean[0] > curve.mean[2]


@pytest.mark.parametrize("bad", ["nan", "inf", "zero"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_bad_row_is_named_by_layer_and_original_row_whatever_the_subsets(bad, seed):
    x, labels = clustered(n=100, d=6, seed=3)
    broken = x.clone()
    broken[37] = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0}[bad]
    what = "have zero norm" if bad == "zero" else "contain NaN or Inf"
    with pytest.raises(ValueError, match=rf"1 rows of layer 'b' {what} \(first: row 37\)"):
        gg.modularity_curve({"a": x, "b": broken}, labels, k=3, n=10, repeats=2, seed=seed)
    with pytest.raises(ValueError, match=rf"1 rows of layer 'b' {what} \(first: row 37\)"):
        gg.motif_curve({"a": x, "b": broken}, labels, k=3, n=10, repeats=2, seed=seed)
    with pytest.raises(ValueError, match=rf"1 rows of layer 'b' of acts_a {what} \(first: row 37\)"):
        gg.similarity_matrix({"a": x, "b": broken})


def test_redundancy_rule_on_constructed_curves():
    c = gg.LayerCurve(["l0", "l1", "l2", "l3", "l4", "l5"], [[0.1, 0.3, 0.305, 0.5, 0.45, 0.7]])
    assert c.redundant(tol=0.01) == ["l2", "l4"]  # plateau, dip
    assert c.redundant(tol=0.25) == ["l1", "l2", "l3", "l4", "l5"]
    assert c.redundant(tol=0.0) == ["l4"]  # only dips
    with pytest.raises(ValueError, match="tol must be non-negative"):
        c.redundant(tol=-1)


def test_json_round_trip_pandas_table_and_plot(tmp_path):
    c = gg.LayerCurve(["a", "b", "c"], [[0.1, 0.5, 0.49], [0.2, 0.6, 0.61]], {"k": 3})
    back = gg.LayerCurve.from_json(c.to_json(tmp_path / "c.json"))
    assert back.layers == c.layers and np.array_equal(back.values, c.values) and back.params == {"k": 3}
    assert gg.LayerCurve.from_json(tmp_path / "c.json").layers == c.layers
    df = c.to_pandas()
    assert df["redundant"].tolist() == [False, False, True] and df["mean"][1] == pytest.approx(0.55)
    text = str(c)
    assert "redundant" in text.splitlines()[3] and text.splitlines()[0].startswith("layer")
    path = c.plot(tmp_path / "c.png", others={"other": back})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_errors():
    x, labels = clustered(n=50, d=4)
    with pytest.raises(ValueError, match=r"5 disjoint subsets of 20 samples need 100 samples, but there are 50"):
        gg.modularity_curve({"a": x}, labels, n=20, repeats=5)
    with pytest.raises(ValueError, match="no labels"):
        gg.modularity_curve({"a": x})
    with pytest.raises(ValueError, match="layer 'b' has 10 samples, the first layer 50"):
        gg.modularity_curve({"a": x, "b": x[:10]}, labels, n=None)
    with pytest.raises(TypeError, match="non-empty mapping"):
        gg.modularity_curve({}, labels)
    with pytest.raises(ValueError, match="one column per layer"):
        gg.LayerCurve(["a"], [[0.1, 0.2]])


def test_cli_curve_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    model = TinyResNet()
    torch.save(model, tmp_path / "model.pt")
    x, y = torch.randn(60, 3, 8, 8), torch.randint(0, 3, (60,))
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=y.numpy())
    code = main(
        [
            "curve",
            str(tmp_path / "model.pt"),
            str(tmp_path / "data.npz"),
            "--n",
            "20",
            "--repeats",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "layer1.0" in out and "redundant layers" in out
    saved = json.loads((tmp_path / "out" / "curve.json").read_text())
    acts = gg.capture(model, (x, y))  # itself checked against a manual forward in test_capture
    ref = networkx_curve(acts, y.numpy(), 3, 20, 3, 0)
    np.testing.assert_allclose(saved["values"], ref, atol=1e-6)
    x_nan = x.clone()
    x_nan[41, 0, 2, 2] = float("nan")
    np.savez(tmp_path / "nan.npz", x=x_nan.numpy(), y=y.numpy())
    for n in ("20", "0"):  # the subsets drawn never matter: the row is found up front
        assert (
            main(
                [
                    "curve",
                    str(tmp_path / "model.pt"),
                    str(tmp_path / "nan.npz"),
                    "--n",
                    n,
                    "--repeats",
                    "2",
                    "--out",
                    str(tmp_path / "out"),
                    "--no-progress",
                ]
            )
            == 1
        )
        assert "rows of layer 'conv1' contain NaN or Inf (first: row 41)" in capsys.readouterr().err
    assert (tmp_path / "out" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    torch.save({"x": x, "y": y[:10]}, tmp_path / "bad.pt")
    assert main(["curve", str(tmp_path / "model.pt"), str(tmp_path / "bad.pt")]) == 1
    assert "60 inputs but 10 labels" in capsys.readouterr().err
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert main(["curve", str(tmp_path / "sd.pt"), str(tmp_path / "data.npz"), "--n", "20", "--repeats", "3"]) == 1
    assert "not a module; save the whole model" in capsys.readouterr().err
    assert main(["curve", str(tmp_path / "none.pt"), str(tmp_path / "data.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_demo_shows_the_papers_finding(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "gpugraph", "demo", "--out", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    assert "redundant layers" in out
    curves = json.loads((tmp_path / "demo_curve.json").read_text())
    trained, untrained = curves["trained"]["mean"], curves["untrained"]["mean"]
    assert trained[-2] - trained[0] > 0.4  # rises from input to the last hidden layer
    assert abs(untrained[-2] - untrained[0]) < 0.15
    assert (tmp_path / "demo_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_help_lists_the_subcommands():
    out = subprocess.run([sys.executable, "-m", "gpugraph", "--help"], capture_output=True, text=True).stdout
    assert "demo" in out and "curve" in out


def test_cli_similarity_end_to_end(tmp_path, capsys):
    torch.manual_seed(0)
    a, b = TinyResNet(), TinyResNet()
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    x, y = torch.randn(50, 3, 8, 8), torch.randint(0, 3, (50,))
    torch.save({"x": x, "y": y}, tmp_path / "data.pt")
    code = main(
        [
            "similarity",
            str(tmp_path / "a.pt"),
            str(tmp_path / "a.pt"),
            str(tmp_path / "data.pt"),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert re.search(r"^layer1\.0 +layer1\.0 +1\.000$", capsys.readouterr().out, re.M)
    saved = json.loads((tmp_path / "out" / "similarity.json").read_text())
    np.testing.assert_allclose(np.diag(saved["values"]), 1.0, atol=1e-9)
    assert (
        main(
            [
                "similarity",
                str(tmp_path / "a.pt"),
                str(tmp_path / "b.pt"),
                str(tmp_path / "data.pt"),
                "--measure",
                "cka",
                "--out",
                str(tmp_path / "out2"),
                "--no-progress",
            ]
        )
        == 0
    )
    acts_a, acts_b = gg.capture(a, (x, y)), gg.capture(b, (x, y))

    def numpy_cka(p, q):  # the definition on centred columns, float64
        p, q = p.double().numpy(), q.double().numpy()
        p, q = p - p.mean(0), q - q.mean(0)
        return np.linalg.norm(q.T @ p) ** 2 / (np.linalg.norm(p.T @ p) * np.linalg.norm(q.T @ q))

    ref = [[numpy_cka(acts_a[i], acts_b[j]) for j in acts_b] for i in acts_a]
    saved = json.loads((tmp_path / "out2" / "similarity.json").read_text())
    np.testing.assert_allclose(saved["values"], ref, atol=1e-9)
    capsys.readouterr()
    for flags, label, want in (
        (["--centre"], "lsim (centred)", gg.similarity_matrix(acts_a, acts_b, centre=True)),
        (
            ["--measure", "cka", "--unbiased"],
            "cka (unbiased)",
            gg.similarity_matrix(acts_a, acts_b, measure="cka", unbiased=True),
        ),
    ):
        assert (
            main(
                [
                    "similarity",
                    str(tmp_path / "a.pt"),
                    str(tmp_path / "b.pt"),
                    str(tmp_path / "data.pt"),
                    *flags,
                    "--out",
                    str(tmp_path / "out3"),
                    "--no-progress",
                ]
            )
            == 0
        )
        assert capsys.readouterr().out.startswith(f"{label}: rows model A")
        saved = json.loads((tmp_path / "out3" / "similarity.json").read_text())
        np.testing.assert_allclose(saved["values"], want.values, atol=1e-12)


def test_cli_and_capture_take_string_labels(tmp_path, capsys):
    torch.manual_seed(0)
    model = TinyResNet()
    torch.save(model, tmp_path / "model.pt")
    x, y = torch.randn(60, 3, 8, 8), torch.randint(0, 3, (60,))
    names = np.array(["cat", "dog", "emu"])[y.numpy()]
    np.savez(tmp_path / "data.npz", x=x.numpy(), y=names)  # loads back as a NumPy str array
    assert (
        main(
            [
                "curve",
                str(tmp_path / "model.pt"),
                str(tmp_path / "data.npz"),
                "--n",
                "20",
                "--repeats",
                "3",
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "out" / "curve.json").read_text())
    acts = gg.capture(model, (x, names))
    assert acts.labels.tolist() == names.tolist()
    np.testing.assert_allclose(saved["values"], networkx_curve(acts, y.numpy(), 3, 20, 3, 0), atol=1e-6)
    batches = [(x[i : i + 16], names[i : i + 16].tolist()) for i in range(0, 60, 16)]  # lists of strings
    assert gg.capture(model, batches).labels.tolist() == names.tolist()


@pytest.mark.filterwarnings("ignore:the modularity curve is flat")
def test_a_curve_checks_its_rows_labels_and_options_once_at_the_door(monkeypatch):
    """Each layer's rows are checked once (not again per subset as they are normalised), the
    labels converted to codes once, and the curve equals modularity graph by graph."""
    import gpugraph._util.convert as convert
    import gpugraph.graph.edges as edges_module
    import gpugraph.knn.rows as rows
    import gpugraph.studies.curves as curves_module

    x, labels = clustered(n=240, d=10, classes=3, seed=3)
    acts = {"a": x, "b": x + 0.5 * torch.randn(240, 10, generator=torch.Generator().manual_seed(1)), "c": x.double()}
    counts = {"refuse": 0, "codes": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(rows, "_refuse_rows", counted("refuse", rows._refuse_rows))
    codes = counted("codes", convert.label_codes)
    for module in (convert, edges_module, curves_module):
        monkeypatch.setattr(module, "label_codes", codes)
    curve = gg.modularity_curve(acts, labels, k=4, n=60, repeats=4, seed=2)
    assert counts == {"refuse": 3, "codes": 1}  # one per layer; one for the labels
    monkeypatch.undo()
    for i, idx in enumerate(subsets(240, 60, 4, 2)):
        for j, layer in enumerate(acts.values()):
            assert curve.values[i, j] == pytest.approx(
                gg.modularity(gg.knn_graph(layer[idx], k=4), labels[idx]), abs=1e-12
            )


def test_a_bad_option_or_k_of_a_curve_is_refused_before_any_graph_is_built():
    x, labels = clustered(n=100, d=6, classes=2, seed=0)
    with pytest.raises(ValueError, match="negative must be one of"):
        gg.modularity_curve({"a": x}, labels, n=50, repeats=2, negative="drop")
    with pytest.raises(ValueError, match=r"mode must be"):
        gg.modularity_curve({"a": x}, labels, n=50, repeats=2, mode="sum")
    with pytest.raises(ValueError, match=r"1 <= k < N .* N=50"):
        gg.modularity_curve({"a": x}, labels, k=50, n=50, repeats=2)
    with pytest.raises(ValueError, match=r"1 <= k < N .* N=50"):
        gg.motif_curve({"a": x}, labels, k=50, n=50, repeats=2)
