"""gpugraph.distributed with the gloo backend, in 2 and 3 processes spawned from the test.

Every rank writes what it computed to a file; the test compares the ranks' results with the
single-process functions on the concatenated rows (themselves checked against networkx and
exact float64 searches elsewhere).
"""

import datetime
import itertools
import pickle
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import clustered

import gpugraph as gg

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def data():
    x, labels = clustered(n=301, d=8, classes=4, seed=21)
    x[150] = x[40]  # exact duplicates on both sides of shard borders: ties across ranks
    x[151] = x[40]
    y = torch.tanh(x @ torch.randn(8, 6, generator=torch.Generator().manual_seed(2)))
    names = np.array(["ant", "bee", "cat", "dog"])[labels]
    return x, y, names


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def _worker(rank, world, init, out, splits, scenario):
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    try:
        x, y, names = data()
        r0, r1 = splits[rank], splits[rank + 1]
        result = {}
        try:
            if scenario == "measures":
                import gpugraph.distributed as gd

                g = gd.knn_graph(x[r0:r1], k=5, tile=37)
                result["indices"], result["weights"] = g.indices.numpy(), g.weights.numpy()
                result["modularity"] = gd.modularity(g, names[r0:r1])
                result["modularity_max"] = gd.modularity(g, names[r0:r1], mode="max", weighted=False)
                result["triangles"] = gd.triangles(g)
                result["per_node"] = gd.triangles(g, per_node=True).numpy()
                result["motifs"] = gd.motifs(g, names[r0:r1].tolist())
                result["lsim"] = gd.layer_similarity(x[r0:r1], y[r0:r1])
                result["lsim_k"] = gd.layer_similarity(x[r0:r1], y[r0:r1], k=4)
            elif scenario == "curve":
                import gpugraph.distributed as gd

                sl = gd.shard(len(x))
                result["shard"] = (sl.start, sl.stop)
                acts = gg.capture(_model(), (x[sl], names[sl]), include_input=True)
                result["curve"] = gd.modularity_curve(acts, k=3, n=60, repeats=3, seed=1).values
            elif scenario == "dies":
                import os

                import gpugraph.distributed as gd

                if rank == 1:
                    os._exit(3)  # a rank lost mid-run, before the ring exchange
                try:
                    gd.knn_graph(x[r0:r1], k=5)
                except RuntimeError as exc:  # the collective notices the lost peer
                    result["error"] = f"RuntimeError: {exc}"
            elif scenario == "nan":
                import gpugraph.distributed as gd

                local = x[r0:r1].clone()
                if rank == 1:
                    local[3] = float("nan")
                gd.knn_graph(local, k=5)
            elif scenario == "width":
                import gpugraph.distributed as gd

                gd.knn_graph(x[r0:r1, : 8 if rank else 7], k=5)
            elif scenario in ("empty_dtype", "empty_width"):
                import gpugraph.distributed as gd

                local = x[r0:r1]
                if r0 == r1:  # an empty rank that names another dtype or width than its peers
                    local = torch.empty(0, 8, dtype=torch.float64) if scenario == "empty_dtype" else torch.empty(0, 4)
                for precision in ("exact", "bf16"):
                    g = gd.knn_graph(local, k=5, tile=29, precision=precision, memory="64MB")
                    result[precision] = (g.indices.numpy(), g.weights.numpy())
                result["lsim"] = gd.layer_similarity(local, y[r0:r1])
            elif scenario.startswith("zarr:"):
                import zarr

                import gpugraph.distributed as gd
                from gpugraph._util import memory as _memory

                shard = zarr.open_array(f"{scenario.split(':', 1)[1]}.{rank}", mode="r")  # this rank's rows, on disk
                gd.knn_graph(shard, k=10, memory="8MB")  # everything compiled before the measured call
                before = _memory.reset_peak()
                g = gd.knn_graph(shard, k=10, memory="8MB")
                result["grown"] = _memory.peak_resident() - before
                result["indices"], result["weights"] = g.indices.numpy(), g.weights.numpy()
            elif scenario == "orthogonal":
                import gpugraph.distributed as gd

                x1, x2 = _orthogonal_pair()
                result["lsim"] = gd.layer_similarity(x1[r0:r1], x2[r0:r1])
            elif scenario == "curve_nan":
                import gpugraph.distributed as gd

                local = x[r0:r1].clone()
                if rank == 1:
                    local[3] = float("nan")
                gd.modularity_curve({"x": local}, names[r0:r1], k=3, n=60, repeats=2)
            elif scenario == "graph_type":
                import gpugraph.distributed as gd

                g = gd.knn_graph(x[r0:r1], k=5)
                gd.modularity(g if rank != 1 else g.indices, names[r0:r1])
            elif scenario == "labels":
                import gpugraph.distributed as gd

                g = gd.knn_graph(x[r0:r1], k=5)
                gd.modularity(g, names[r0:r1][: 3 if rank == 1 else None])
        except (ValueError, TypeError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump(result, f)
    except Exception:
        with open(f"{out}.{rank}", "wb") as f:
            pickle.dump({"crash": traceback.format_exc()}, f)
    finally:
        dist.destroy_process_group()


def _orthogonal_pair():
    """Nearly orthogonal samples, where |A_i|^2 = sum_j S_ij^2 - 1 cancels."""
    g = torch.Generator().manual_seed(5)
    eye = torch.eye(9, dtype=torch.float64)
    return eye + 1e-8 * torch.randn(9, 9, generator=g, dtype=torch.float64), eye + 1e-8 * torch.randn(
        9, 9, generator=g, dtype=torch.float64
    )


def run(tmp_path, splits, scenario):
    world = len(splits) - 1
    out = tmp_path / "result"
    mp.spawn(_worker, args=(world, f"file://{tmp_path / 'store'}", str(out), splits, scenario), nprocs=world)
    results = []
    for rank in range(world):
        with open(f"{out}.{rank}", "rb") as f:
            results.append(pickle.load(f))
    crashes = [f"rank {rank}:\n{r['crash']}" for rank, r in enumerate(results) if "crash" in r]
    assert not crashes, "\n".join(crashes)
    return results


@pytest.mark.parametrize("splits", [[0, 150, 301], [0, 40, 40, 301], [0, 151, 152, 301], [0, 70, 150, 151, 301]])
def test_distributed_measures_equal_the_single_process_ones(tmp_path, splits):
    # uneven shards, a rank with no rows, a rank of one row (fewer than k), duplicates split
    x, y, names = data()
    results = run(tmp_path, splits, "measures")
    g = gg.knn_graph(x, k=5)
    indices = np.concatenate([r["indices"] for r in results])
    weights = np.concatenate([r["weights"] for r in results])
    # one canonical value per pair, whichever rank and tile computed it: equal bit for bit
    np.testing.assert_array_equal(indices, g.indices.numpy())
    np.testing.assert_array_equal(weights, g.weights.numpy())
    expected = {
        "modularity": gg.modularity(g, names),
        "modularity_max": gg.modularity(g, names, mode="max", weighted=False),
        "triangles": gg.triangles(g),
        "motifs": gg.motifs(g, names),
        "lsim": gg.layer_similarity(x, y),
        "lsim_k": gg.layer_similarity(x, y, k=4),
    }
    for r in results:  # the same value on every rank
        for key, value in expected.items():
            assert r[key] == pytest.approx(value, abs=1e-9), key
    per_node = np.concatenate([r["per_node"] for r in results])
    np.testing.assert_array_equal(per_node, gg.triangles(g, per_node=True).numpy())


@pytest.mark.parametrize(
    "scenario,message",
    [
        ("nan", r"rank 1: 1 rows of x on rank 1 contain NaN or Inf \(first: row 3\)"),
        ("width", r"every rank must hold rows of one width D: rank 1 has 8, another 7"),
        ("labels", r"rank 1: labels must have one entry per node: expected 151, got 3"),
    ],
)
def test_bad_input_on_one_rank_is_the_same_error_on_every_rank(tmp_path, scenario, message):
    results = run(tmp_path, [0, 150, 301], scenario)
    errors = [r.get("error") for r in results]
    assert errors[0] is not None and len(set(errors)) == 1, errors
    assert __import__("re").search(message, errors[0]), errors[0]


@pytest.mark.parametrize("scenario", ["empty_dtype", "empty_width"])
def test_an_empty_rank_takes_width_and_dtype_from_the_others(tmp_path, scenario):
    # the review's case: an empty rank given (0, 6) float64 or (0, 4) beside float32 rows of
    # D = 6 aborted one of 3 gloo processes; now it adopts its peers' D and dtype, at every
    # precision and with a memory budget (the options torchrun's `gpugraph graph` passes on)
    x, y, _ = data()
    results = run(tmp_path, [0, 150, 150, 301], scenario)
    g = gg.knn_graph(x, k=5)
    for precision in ("exact", "bf16"):
        indices = np.concatenate([r[precision][0] for r in results])
        weights = np.concatenate([r[precision][1] for r in results])
        np.testing.assert_array_equal(indices, g.indices.numpy())
        np.testing.assert_array_equal(weights, g.weights.numpy())
    assert all(r["lsim"] == pytest.approx(gg.layer_similarity(x, y), abs=1e-9) for r in results)


def test_an_out_of_core_shard_is_read_a_chunk_at_a_time(tmp_path, monkeypatch):
    # 3 ranks of 3000 x 2048 float32 rows on disk (25 MB a shard; zarr, read by file reads, so
    # that resident memory counts what gpugraph holds, not mapped pages): the ring used to read
    # a rank's shard whole and to receive a whole block (two shards' worth); now the blocks
    # travel in chunks of at most a tile (and an eighth of the budget) and the own rows are
    # read a tile at a time, so a rank holds less than one shard
    import zarr

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # freed blocks go back: the peak is live memory
    x = np.random.default_rng(3).normal(size=(9000, 2048)).astype(np.float32)
    for rank in range(3):
        z = zarr.open_array(
            str(tmp_path / f"x.{rank}"), mode="w", shape=(3000, 2048), chunks=(250, 2048), dtype="float32"
        )
        z[:] = x[3000 * rank : 3000 * (rank + 1)]
    results = run(tmp_path, [0, 3000, 6000, 9000], f"zarr:{tmp_path / 'x'}")
    g = gg.knn_graph(torch.from_numpy(x), k=10)
    np.testing.assert_array_equal(np.concatenate([r["indices"] for r in results]), g.indices.numpy())
    np.testing.assert_array_equal(np.concatenate([r["weights"] for r in results]), g.weights.numpy())
    shard = 3000 * 2048 * 4
    assert max(r["grown"] for r in results) < shard, [r["grown"] for r in results]


def test_distributed_dense_lsim_has_no_cancellation(tmp_path):
    x1, x2 = _orthogonal_pair()
    results = run(tmp_path, [0, 4, 4, 9], "orthogonal")
    u1, u2 = (x / x.norm(dim=1, keepdim=True) for x in (x1, x2))
    s1, s2 = u1 @ u1.T, u2 @ u2.T  # the N x N definition in float64
    s1.fill_diagonal_(0.0)
    s2.fill_diagonal_(0.0)
    want = float(((s1 * s2).sum(1) / (s1.norm(dim=1) * s2.norm(dim=1))).mean())
    assert all(r["lsim"] == pytest.approx(want, abs=1e-9) for r in results)


@pytest.mark.parametrize(
    "scenario,message",
    [
        ("curve_nan", r"rank 1: 1 rows of layer 'x' contain NaN or Inf"),
        ("graph_type", r"rank 1: g_local must be a KnnGraph"),
    ],
)
def test_a_bad_argument_on_one_rank_of_three_is_the_same_error_on_all(tmp_path, scenario, message):
    # checked collectively before the first exchange: the others used to get gloo's
    # "Connection closed" (or wait for its timeout had the bad rank carried on)
    results = run(tmp_path, [0, 100, 200, 301], scenario)
    errors = [r.get("error") for r in results]
    assert errors[0] is not None and len(set(errors)) == 1, errors
    assert __import__("re").search(message, errors[0]), errors[0]


@pytest.mark.parametrize("world", [2, 3])
def test_a_capture_on_each_rank_and_a_distributed_curve(tmp_path, world):
    x, _, names = data()
    results = run(tmp_path, [0] * (world + 1), "curve")
    shards = [r["shard"] for r in results]
    assert shards[0][0] == 0 and shards[-1][1] == len(x)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shards))  # contiguous, no sample twice
    ref = gg.modularity_curve(gg.capture(_model(), (x, names), include_input=True), k=3, n=60, repeats=3, seed=1)
    for r in results:
        np.testing.assert_allclose(r["curve"], ref.values, atol=1e-9)


def test_a_rank_that_dies_makes_the_others_fail_not_hang(tmp_path):
    import time

    start = time.monotonic()
    context = mp.spawn(
        _worker,
        args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "r"), [0, 150, 301], "dies"),
        nprocs=2,
        join=False,
    )
    for process in context.processes:
        process.join(timeout=120)
    assert [p.exitcode for p in context.processes] == [0, 3]  # the survivor ended by itself
    with open(tmp_path / "r.0", "rb") as f:
        survivor = pickle.load(f)
    assert "error" in survivor, survivor
    assert time.monotonic() - start < 90  # well within the process group's 60 s timeout + start-up


def test_without_a_process_group_the_error_says_what_to_do():
    import gpugraph.distributed as gd

    with pytest.raises(RuntimeError, match="needs an initialised process group: start the ranks with torchrun"):
        gd.knn_graph(torch.randn(10, 3), k=2)


def test_the_graph_command_under_torchrun(tmp_path):
    import json
    import subprocess
    import sys

    x, _, names = data()
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", names)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=3",
            "--log-dir",
            str(tmp_path / "logs"),
            "-m",
            "gpugraph",
            "graph",
            str(tmp_path / "x.npy"),
            "--k",
            "5",
            "--labels",
            str(tmp_path / "y.npy"),
            "--out",
            str(tmp_path / "out"),
            "--precision",
            "bf16",
            "--memory",
            "2MB",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    g = gg.knn_graph(x, k=5)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "indices.npy"), g.indices.numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "weights.npy"), g.weights.numpy())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["world_size"] == 3 and summary["n"] == 301
    assert summary["precision"] == "bf16" and summary["memory"] == "2MB"  # passed on, not dropped
    # the half ring with P = 3 has one step: rank r sends its own rows (D = 8 float32) to
    # rank r + 1, then the lists of rank r - 1's rows (k = 5 float32 values and int64 ids) home
    sizes = [round((i + 1) * 301 / 3) - round(i * 301 / 3) for i in range(3)]
    expected = [sizes[r] * 8 * 4 + sizes[r - 1] * 5 * (4 + 8) for r in range(3)]
    assert summary["bytes_sent_per_rank"] == expected
    per_rank = summary["peak_memory_bytes_per_rank"]
    assert len(per_rank) == summary["world_size"] and summary["peak_memory_bytes"] == max(per_rank) > 0
    assert "largest of the ranks'" in summary["peak_memory_is"]
    assert summary["triangles"] == gg.triangles(g) and summary["motifs"] == gg.motifs(g, names)
    assert summary["modularity"] == pytest.approx(gg.modularity(g, names), abs=1e-9)
