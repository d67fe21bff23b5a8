"""What a new user meets first: the command line on ordinary files, and the API's conveniences.

The command-line cases run `python -m gpugraph` in a subprocess on tiny files, as a user
would (stdout and stderr are pipes, not a terminal).
"""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import clustered, exact_knn

import gpugraph as gg

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


if __name__ == "__main__":
    import sys
    torch.manual_seed(0)
    torch.save(Net(), sys.argv[1])
"""


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "gpugraph", *map(str, args)], capture_output=True, text=True, cwd=cwd, check=False
    )


@pytest.fixture
def files(tmp_path):
    """A model pickled from a script's __main__, and float64 data saved by NumPy."""
    (tmp_path / "netdef.py").write_text(NET)
    subprocess.run([sys.executable, str(tmp_path / "netdef.py"), str(tmp_path / "model.pt")], check=True)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.normal(size=(3, 8))[y] + 0.5 * rng.normal(size=(90, 8))  # float64, NumPy's default
    np.savez(tmp_path / "data.npz", x=x, y=y)
    return tmp_path


def test_a_model_pickled_from_main_needs_import_and_says_so(files):
    out = cli("curve", files / "model.pt", files / "data.npz", "--n", "30", "--repeats", "2")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "pickled with a class defined in the script that saved it" in out.stderr
    assert "--import path/to/that_script.py" in out.stderr
    out = cli(
        "curve",
        files / "model.pt",
        files / "data.npz",
        "--n",
        "30",
        "--repeats",
        "2",
        "--import",
        files / "netdef.py",
        "--out",
        files / "out",
    )
    assert out.returncode == 0, out.stderr
    # float64 data for a float32 model: cast, said once, in one line
    assert out.stderr.count("gpugraph: warning: capture: inputs are torch.float64") == 1
    saved = json.loads((files / "out" / "curve.json").read_text())
    assert saved["layers"] == ["body.0", "body.2", "body", "head"] and saved["params"]["final"] == ["head"]
    assert "head" in out.stdout and "(model output)" in out.stdout


def test_float16_data_is_cast_too(files):
    data = np.load(files / "data.npz")
    np.savez(files / "half.npz", x=data["x"].astype(np.float16), y=data["y"])
    out = cli(
        "curve",
        files / "model.pt",
        files / "half.npz",
        "--n",
        "30",
        "--repeats",
        "2",
        "--import",
        files / "netdef.py",
        "--out",
        files / "out",
    )
    assert out.returncode == 0 and "inputs are torch.float16" in out.stderr


def test_a_file_that_is_not_a_torch_file(files):
    (files / "junk.pt").write_bytes(b"this is not a model\n" * 10)
    out = cli("curve", files / "junk.pt", files / "data.npz", "--n", "30", "--repeats", "2")
    assert out.returncode == 1 and "is not a file written by torch.save or torch.jit.save" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_clear_error(files):
    out = cli(
        "curve",
        files / "model.pt",
        files / "data.npz",
        "--n",
        "30",
        "--repeats",
        "2",
        "--device",
        "cuda",
        "--import",
        files / "netdef.py",
    )
    assert out.returncode == 1 and "device='cuda' was asked for, but torch sees no CUDA device" in out.stderr
    with pytest.raises(gg.GpuGraphError, match="torch sees no CUDA device"):
        gg.capture(torch.nn.Linear(4, 2), torch.randn(8, 4), device="cuda")


def test_too_few_samples_are_reported_before_any_model_runs(files):
    (files / "junk.pt").write_bytes(b"never loaded")
    out = cli("curve", files / "junk.pt", files / "data.npz", "--n", "50", "--repeats", "50")
    assert (
        out.returncode == 1 and "the data has 90 samples, too few for 50 disjoint subsets of at least 2" in out.stderr
    )


def test_a_curve_on_a_small_test_set_adapts_n_and_says_so_in_one_line(files):
    """The rule of gpugraph prune: subsets as large as the data allows, one line saying so;
    the table says k and n."""
    out = cli(
        "curve",
        files / "model.pt",
        files / "data.npz",
        "--n",
        "50",
        "--repeats",
        "2",
        "--import",
        files / "netdef.py",
        "--out",
        files / "out",
    )
    assert out.returncode == 0, out.stderr
    assert "the data has 90 samples: 2 subsets of 45 (asked for --n 50)" in out.stdout
    assert "k = 3, 2 subsets of n = 45" in out.stdout
    saved = json.loads((files / "out" / "curve.json").read_text())
    assert saved["params"]["n"] == 45 and saved["params"]["k"] == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["curve", "m.pt", "d.npz", "--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
        (["demo", "--epochs", "0"], "--epochs: must be a positive integer, got 0"),
        (["curve", "m.pt", "d.npz", "--k", "0"], "--k: must be a positive integer, got 0"),
        (["curve", "m.pt", "d.npz", "--n", "-1"], "--n: must be 0 or more, got -1"),
        (["similarity", "--layers", "a", "b", "m.pt", "m2.pt", "d.npz"], "unrecognized arguments: d.npz"),
    ],
)
def test_bad_options_are_refused_by_the_parser(args, message):
    out = cli(*args)
    assert out.returncode == 2 and message in out.stderr


def test_similarity_flags_that_do_not_fit_the_measure_are_refused(files):
    out = cli("similarity", files / "model.pt", files / "model.pt", files / "data.npz", "--unbiased")
    assert (
        out.returncode == 1 and "--unbiased is an estimator of CKA; it has no meaning with --measure lsim" in out.stderr
    )
    out = cli("similarity", files / "model.pt", files / "model.pt", files / "data.npz", "--measure", "cka", "--centre")
    assert out.returncode == 1 and "--centre applies to --measure lsim" in out.stderr


def test_k_with_cka_is_refused(files):
    out = cli("similarity", files / "model.pt", files / "model.pt", files / "data.npz", "--measure", "cka", "--k", "5")
    assert out.returncode == 1 and "--k 5 has no meaning with --measure cka" in out.stderr


def test_layers_before_the_positionals_and_version_and_help(files):
    out = cli(
        "curve",
        "--layers",
        "body.0,head",
        "--layers",
        "body.2",
        files / "model.pt",
        files / "data.npz",
        "--n",
        "30",
        "--repeats",
        "2",
        "--import",
        files / "netdef.py",
        "--out",
        files / "out",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((files / "out" / "curve.json").read_text())["layers"] == ["body.0", "body.2", "head"]
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gpugraph {gg.__version__}"
    text = cli("curve", "--help").stdout
    assert "seed of the random subsets" in text and "--progress, --no-progress" in text


def test_progress_bars_only_on_a_terminal_or_when_asked(files):
    common = [
        "curve",
        files / "model.pt",
        files / "data.npz",
        "--n",
        "30",
        "--repeats",
        "2",
        "--import",
        files / "netdef.py",
        "--out",
        files / "out",
    ]
    quiet = cli(*common)  # stderr is a pipe here, as in a log file
    assert quiet.returncode == 0 and "%|" not in quiet.stderr  # no tqdm bar
    loud = cli(*common, "--progress")
    assert loud.returncode == 0 and "capture:" in loud.stderr and "%|" in loud.stderr


# ---- the Python API ------------------------------------------------------------------------


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))


@pytest.mark.parametrize("form", ["tensor", "list", "numpy", "one-hot", "strings"])
def test_capture_takes_an_inputs_labels_pair_in_every_form(form):
    x = torch.randn(50, 6)
    y = torch.randint(0, 3, (50,))
    given = {
        "tensor": y,
        "list": y.tolist(),
        "numpy": y.numpy(),
        "one-hot": torch.nn.functional.one_hot(y, 3),
        "strings": np.array(["a", "b", "c"])[y.numpy()],
    }[form]
    acts = gg.capture(small_net(), (x, given), batch_size=16)
    assert acts.n == 50
    expected = np.array(["a", "b", "c"])[y.numpy()].tolist() if form == "strings" else y.tolist()
    assert list(np.asarray(acts.labels).tolist()) == expected


def test_capture_says_what_it_expected_of_a_pair():
    with pytest.raises(ValueError, match=r"an \(inputs, labels\) pair, but it has 50 inputs and 10 labels"):
        gg.capture(small_net(), (torch.randn(50, 6), list(range(10))))
    with pytest.raises(
        ValueError, match=r"one per sample, shape \(B,\), or one-hot rows \(B, C\); got a batch of shape \(16, 3\)"
    ):
        gg.capture(small_net(), (torch.randn(50, 6), torch.rand(50, 3)), batch_size=16)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        gg.capture(small_net(), torch.randn(50, 6), batch_size=0)
    two_batches = [torch.randn(20, 6), torch.randn(7, 6)]  # a list of input batches stays one
    assert gg.capture(small_net(), two_batches).n == 27


def test_include_input_keeps_the_labels_and_the_final_layer_is_never_redundant():
    x, labels = clustered(n=150, d=6, classes=3, seed=1)
    acts = gg.capture(small_net(), (x, labels), include_input=True)
    assert list(acts) == ["input", "0", "2"] and acts.final == ["2"]  # the Linear layers
    torch.testing.assert_close(acts["input"], x)
    assert acts.labels.tolist() == labels.tolist()
    curve = gg.LayerCurve(list(acts), [[0.1, 0.1, 0.05]], {"final": acts.final})
    assert curve.redundant() == ["0"] and "(model output)" in curve.table().splitlines()[-1]


def test_a_flat_curve_warns():
    x, labels = clustered(n=300, d=6, classes=3, seed=1)
    flat = {f"l{i}": x + 0.01 * torch.randn(300, 6, generator=torch.Generator().manual_seed(i)) for i in range(3)}
    with pytest.warns(UserWarning, match="flat within its error bars .* reduce='avgpool'"):
        gg.modularity_curve(flat, labels, n=100, repeats=3)
    rising = {"noise": torch.randn(300, 6), "half": x + torch.randn(300, 6), "x": x}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gg.modularity_curve(rising, labels, n=100, repeats=3)


def test_similarity_matrix_has_what_a_curve_has(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    x, _ = clustered(n=100, d=6, seed=2)
    m = gg.similarity_matrix({"a": x, "b": torch.relu(x)}, {"c": x, "d": -x, "e": x**2}, measure="cka")
    df = m.to_pandas()
    assert df.index.name == "model A" and list(df.columns) == ["c", "d", "e"]
    np.testing.assert_array_equal(df.to_numpy(), m.values)
    back = gg.SimilarityMatrix.from_json(m.to_json(tmp_path / "m.json"))
    np.testing.assert_array_equal(back.values, m.values) and back.layers_b == m.layers_b
    assert gg.SimilarityMatrix.from_json(tmp_path / "m.json").measure == "cka"
    text = str(m)
    assert text.splitlines()[0] == "cka: rows model A, columns model B" and "best in B" in text
    ax = m.plot()
    assert ax.get_xlabel() == "model B: layer" and ax.get_ylabel() == "model A: layer"
    assert len(ax.texts) == 6  # every value written in its cell
    curve = gg.LayerCurve(["a", "b"], [[0.1, 0.2]])
    assert curve.plot().get_xlabel() == "layer"


def test_a_graph_saved_is_the_graph_loaded(tmp_path):
    x, labels = clustered(n=200, d=5, seed=3)
    g = gg.knn_graph(x, k=6)
    assert g.meta == {"metric": "cosine", "n": 200, "d": 5, "k": 6, "dtype": "float32", "precision": "exact"}
    path = g.save(tmp_path / "graph")
    assert path.name == "graph.npz"
    back = gg.KnnGraph.load(path)
    assert torch.equal(back.indices, g.indices) and torch.equal(back.weights, g.weights)
    assert back.meta["k"] == 6 and back.meta["gpugraph"] == gg.__version__
    assert gg.modularity(back, labels) == gg.modularity(g, labels)
    np.save(tmp_path / "other.npy", np.zeros(3))
    with pytest.raises(ValueError, match=re.escape("is not a graph written by KnnGraph.save")):
        gg.KnnGraph.load(tmp_path / "other.npy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gg.KnnGraph.load(tmp_path / "none.npz")


def test_knn_overlap_and_mutual_knn_take_graphs_or_features():
    x1, _ = clustered(n=120, d=6, seed=4)
    x2 = x1 + 0.7 * torch.randn(120, 6, generator=torch.Generator().manual_seed(4))
    g1, g2 = gg.knn_graph(x1, 5), gg.knn_graph(x2, 5)
    s1 = [set(r) for r in exact_knn(x1.numpy(), 5)[0].tolist()]
    s2 = [set(r) for r in exact_knn(x2.numpy(), 5)[0].tolist()]
    jaccard = np.mean([len(a & b) / len(a | b) for a, b in zip(s1, s2, strict=True)])
    shared = np.mean([len(a & b) / 5 for a, b in zip(s1, s2, strict=True)])
    for a, b in ((g1, g2), (x1, x2), (g1, x2), (x1, g2)):
        assert gg.knn_overlap(
            a, b, k=None if isinstance(a, gg.KnnGraph) and isinstance(b, gg.KnnGraph) else 5
        ) == pytest.approx(jaccard, abs=1e-12)
        assert gg.mutual_knn(
            a, b, k=None if isinstance(a, gg.KnnGraph) and isinstance(b, gg.KnnGraph) else 5
        ) == pytest.approx(shared, abs=1e-12)


def test_knn_graph_reports_progress_to_a_callback():
    calls = []
    x, _ = clustered(n=500, d=4, seed=5)
    gg.knn_graph(x, k=4, tile=100, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 15) for i in range(1, 16)]  # 5 diagonal tiles + 10 above the diagonal


def test_the_resnet_example_runs_offline_at_a_tiny_size(tmp_path):
    root = Path(__file__).parents[2]
    out = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "resnet18_cifar.py"),
            "--samples",
            "120",
            "--n",
            "40",
            "--repeats",
            "2",
            "--out",
            str(tmp_path / "curve.png"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "layer4.1" in out.stdout and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_python_dash_m_gpugraph_is_the_command():
    out = subprocess.run([sys.executable, "-m", "gpugraph", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == f"gpugraph {gg.__version__}"


def test_files_that_are_not_what_they_claim_get_one_clear_line(files):
    """A text file as DATA (.pt or .npz), a text file renamed .npy, an .npy of Python objects:
    one line naming the file and how to save it, never a traceback or advice to load unsafely."""
    (files / "notes.pt").write_text("these are my notes\n")
    (files / "notes.npz").write_text("these are my notes\n")
    (files / "fake.npy").write_text("these are my notes\n")
    np.save(files / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    for data in ("notes.pt", "notes.npz"):
        out = cli("curve", files / "model.pt", files / data, "--import", files / "netdef.py")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert f"data file {files / data} is not" in out.stderr and "torch.save({'x': inputs" in out.stderr
    out = cli("graph", files / "fake.npy", "--k", "2")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "allow_pickle" not in out.stderr
    assert "fake.npy is not an .npy file (it lacks NumPy's header); save a floating-point" in out.stderr
    out = cli("graph", files / "objects.npy", "--k", "2")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "objects.npy holds no array of numbers that can be memory-mapped" in out.stderr


def test_ctrl_c_is_one_line_and_the_status_of_sigint(files, monkeypatch, capsys):
    from gpugraph.knn import build
    from gpugraph.tools.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "search", interrupted)  # as if Ctrl-C came during the tile walk
    np.save(files / "x.npy", np.random.default_rng(0).normal(size=(50, 4)))
    assert main(["graph", str(files / "x.npy"), "--k", "3", "--out", str(files / "out")]) == 130
    assert capsys.readouterr().err == "gpugraph graph: interrupted; no tile was finished, nothing saved\n"
