"""Out-of-core sources: .npy paths, memmaps and zarr arrays give the in-memory results, read a
block of rows at a time."""

import numpy as np
import pytest
import torch
from helpers import clustered, peak_growth

import gpugraph as gg
from gpugraph._util.memory import parse_memory
from gpugraph.knn.sources import as_source

zarr = pytest.importorskip("zarr")


@pytest.fixture
def on_disk(tmp_path):
    x, labels = clustered(n=700, d=24, classes=5, seed=11)
    path = tmp_path / "x.npy"
    np.save(path, x.numpy())
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=tuple(x.shape), chunks=(128, 24), dtype="float32")
    z[:] = x.numpy()
    return x, labels, path, z


def test_every_out_of_core_form_gives_the_in_memory_graph(on_disk):
    x, _, path, z = on_disk
    ref = gg.knn_graph(x, k=7, tile=150)
    for source in (path, str(path), np.load(path, mmap_mode="r"), z):
        g = gg.knn_graph(source, k=7, tile=150)
        assert torch.equal(g.indices, ref.indices) and torch.equal(g.weights, ref.weights)
        assert g.meta["n"] == 700 and g.meta["d"] == 24
    g = gg.knn_graph(path, k=7, tile=150, precision="bf16")  # the screen reads blocks too
    assert torch.equal(g.indices, ref.indices)


def test_float16_sources_are_upcast_block_by_block(tmp_path, on_disk):
    x, *_ = on_disk
    half = x.to(torch.float16)
    np.save(tmp_path / "h.npy", half.numpy())
    g = gg.knn_graph(tmp_path / "h.npy", k=5, tile=200)
    ref = gg.knn_graph(half, k=5, tile=200)
    assert torch.equal(g.indices, ref.indices) and g.meta["dtype"] == "float32"


def test_a_bad_row_on_disk_is_named_by_its_row_in_the_file(tmp_path, on_disk):
    x, *_ = on_disk
    bad = x.numpy().copy()
    bad[555] = np.nan
    bad[123] = 0.0
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"1 rows of x have zero norm \(first: row 123\)"):
        gg.knn_graph(tmp_path / "bad.npy", k=5, tile=100)
    bad[123] = 1.0
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"1 rows of x contain NaN or Inf \(first: row 555\)"):
        gg.knn_graph(tmp_path / "bad.npy", k=5, tile=100)


@pytest.mark.parametrize(
    "array,error,match",
    [
        (np.zeros((4, 3, 2), np.float32), ValueError, r"must be 2-D \(N, D\), got shape \(4, 3, 2\)"),
        (np.zeros((4, 3), np.int32), TypeError, "must be floating point .* got dtype int32"),
        (np.zeros((0, 3), np.float32), ValueError, "is empty"),
    ],
)
def test_bad_files_are_refused(tmp_path, array, error, match):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(error, match=match):
        as_source(tmp_path / "a.npy")


@pytest.mark.parametrize(
    "text,value",
    [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), (" 1.5 gib ", int(1.5 * 2**30)), (10**8, 10**8), (None, None)],
)
def test_memory_budgets_parse(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["lots", "2 GBs", "-1GB", 1000, True])
def test_bad_memory_budgets_are_refused(text):
    with pytest.raises(ValueError, match="memory must be"):
        gg.knn_graph(torch.randn(20, 3), k=2, memory=text)


def test_an_out_of_core_graph_stays_within_its_memory_budget(tmp_path):
    # 12 000 x 512 float32: 24.6 MB on disk. Read through zarr (file reads, not a mapping,
    # so that resident memory counts only what gpugraph holds): the in-memory path holds the
    # whole matrix twice over, the out-of-core path its tiles, the N x k state and two blocks.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12000, 512)).astype(np.float32)
    z = zarr.open_array(str(tmp_path / "y.zarr"), mode="w", shape=x.shape, chunks=(1000, 512), dtype="float32")
    z[:] = x
    setup = f"""
        import numpy as np, gpugraph as gg, zarr
        z = zarr.open_array({str(tmp_path / "y.zarr")!r}, mode="r")
        gg.knn_graph(np.asarray(z[:100]), k=5)
    """
    grown, n = peak_growth(setup, "gg.knn_graph(z, k=10, memory='4MB').n")
    assert n == "12000" and grown < 0.9 * x.nbytes, grown
    grown_in_memory, _ = peak_growth(setup, "gg.knn_graph(z[:], k=10, memory='4MB').n")
    assert grown_in_memory > 2 * x.nbytes  # the check above can fail: this is what it rules out


def test_modularity_curve_and_layer_similarity_read_layers_from_disk(tmp_path, on_disk):
    x, labels, path, z = on_disk
    y = torch.relu(x @ torch.randn(24, 16, generator=torch.Generator().manual_seed(0)))
    np.save(tmp_path / "y.npy", y.numpy())
    on_file = {"x": path, "y": np.load(tmp_path / "y.npy", mmap_mode="r")}
    ref = gg.modularity_curve({"x": x, "y": y}, labels, k=3, n=200, repeats=3)
    got = gg.modularity_curve(on_file, labels, k=3, n=200, repeats=3)
    np.testing.assert_array_equal(got.values, ref.values)
    assert gg.layer_similarity(path, tmp_path / "y.npy") == pytest.approx(gg.layer_similarity(x, y), abs=1e-12)
    assert gg.layer_similarity(z, y, k=5) == pytest.approx(gg.layer_similarity(x, y, k=5), abs=1e-12)


# ---- capture that spills to disk -------------------------------------------------------------


def spill_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )


def test_a_capture_written_to_disk_equals_the_one_in_memory(tmp_path):
    x, labels = clustered(n=300, d=6, classes=3, seed=5)
    names = np.array(["a", "b", "c"])[labels]
    ref = gg.capture(spill_net(), (x, names), batch_size=64, include_input=True)
    acts = gg.capture(spill_net(), (x, names), batch_size=64, include_input=True, out=tmp_path / "acts")
    assert list(acts) == list(ref) and acts.final == ref.final == ["4"]
    for name in ref:
        assert torch.equal(acts[name], ref[name])
    assert acts.labels.tolist() == names.tolist()
    manifest = __import__("json").loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["rows"] == 300
    assert manifest["layers"]["2"] == {"file": "2.npy", "dtype": "<f4", "shape": [300, 8]}
    assert np.load(tmp_path / "acts" / "2.npy").shape == (300, 8)  # plain .npy files
    again = gg.Activations.load(tmp_path / "acts")
    np.testing.assert_array_equal(
        gg.modularity_curve(again, k=3, n=100, repeats=2).values, gg.modularity_curve(ref, k=3, n=100, repeats=2).values
    )
    half = gg.capture(spill_net(), (x, labels), dtype=torch.float16, out=tmp_path / "half")
    assert half["2"].dtype == torch.float16 and torch.equal(half.labels, torch.as_tensor(labels))


def test_an_interrupted_capture_is_reported_and_resumed(tmp_path):
    x, labels = clustered(n=200, d=6, classes=3, seed=6)
    batches = [(x[i : i + 32], labels[i : i + 32]) for i in range(0, 200, 32)]

    def interrupted():
        for i, batch in enumerate(batches):
            if i == 4:
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        gg.capture(spill_net(), interrupted(), out=tmp_path / "acts")
    assert not (tmp_path / "acts" / "0.npy").exists()  # nothing half-written passes as whole
    with pytest.raises(
        ValueError, match=r"interrupted after \d+ samples: layers 0, 2, 4 are incomplete; .*resume=True"
    ):
        gg.Activations.load(tmp_path / "acts")
    with pytest.raises(
        ValueError, match=r"already holds an interrupted capture; pass overwrite=True .* or resume=True"
    ):
        gg.capture(spill_net(), batches, out=tmp_path / "acts")
    resumed = gg.capture(spill_net(), batches, out=tmp_path / "acts", resume=True)
    ref = gg.capture(spill_net(), batches)
    for name in ref:
        assert torch.equal(resumed[name], ref[name])
    assert torch.equal(resumed.labels, ref.labels)
    with pytest.raises(ValueError, match="already holds a complete capture; pass overwrite=True"):
        gg.capture(spill_net(), batches, out=tmp_path / "acts")
    assert gg.capture(spill_net(), batches[:2], out=tmp_path / "acts", overwrite=True).n == 64
    with pytest.raises(ValueError, match="resume and overwrite apply to a capture written to disk"):
        gg.capture(spill_net(), batches, resume=True)


def test_a_capture_that_would_fill_the_disk_is_refused_first(tmp_path, monkeypatch):
    monkeypatch.setattr("gpugraph.models.spill.free_bytes", lambda out: 1000)
    with pytest.raises(gg.GpuGraphError, match=r"need about .* GiB on disk under .* but only"):
        gg.capture(spill_net(), torch.randn(500, 6), out=tmp_path / "acts", batch_size=50)


def test_the_graph_command_on_npy_files(tmp_path):
    import json
    import subprocess
    import sys

    import networkx as nx
    from helpers import exact_knn, nx_reference_modularity, paper_adjacency

    x, labels = clustered(n=400, d=8, classes=4, seed=8)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", np.array(["w", "x", "y", "z"])[labels])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpugraph",
            "graph",
            str(tmp_path / "x.npy"),
            "--k",
            "6",
            "--labels",
            str(tmp_path / "y.npy"),
            "--out",
            str(tmp_path / "out"),
            "--memory",
            "8MB",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "%|" not in out.stderr  # no bar when stderr is not a terminal
    indices = np.load(tmp_path / "out" / "indices.npy")
    assert [set(r) for r in indices.tolist()] == [set(r) for r in exact_knn(x.numpy(), 6)[0].tolist()]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["n"], summary["d"], summary["k"], summary["world_size"]) == (400, 8, 6, 1)
    assert summary["modularity"] == pytest.approx(
        nx_reference_modularity(paper_adjacency(x.numpy(), 6), labels), abs=1e-6
    )
    union = nx.from_numpy_array(paper_adjacency(x.numpy(), 6, "max", weighted=False))
    assert summary["triangles"] == sum(nx.triangles(union).values()) // 3 == sum(summary["motifs"].values())
    assert summary["peak_memory_bytes"] > 0 and summary["seconds"] > 0
    bad = subprocess.run(
        [sys.executable, "-m", "gpugraph", "graph", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "holds labels of shape (400, 8)" in bad.stderr
