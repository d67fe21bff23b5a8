"""A search interrupted and resumed from its checkpoint gives the uninterrupted graph, bit for bit."""

import os
import signal

import numpy as np
import pytest
import torch

import gpugraph as gg
from gpugraph.knn import checkpoint as ck
from gpugraph.tools.cli import CHECKPOINT, main

TILE = 100  # 900 rows: 9 diagonal tiles, then 36 upper ones


def matrix(dtype=torch.float32, seed=0, n=900, d=16):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[n // 2 :: 7] = x[n // 2]  # exact duplicates: ties broken by index across the interruption
    return x.to(dtype)


def stop_at(tile):
    def progress(done, total):
        if done == tile:
            raise KeyboardInterrupt

    return progress


def interrupted(x, path, at, **kw):
    with pytest.raises(KeyboardInterrupt):
        gg.knn_graph(x, checkpoint=path, progress=stop_at(at), **kw)


@pytest.mark.parametrize(
    "dtype,precision,at",
    [
        (torch.float32, "exact", 5),  # among the diagonal tiles
        (torch.float32, "exact", 23),  # among the upper ones
        (torch.float64, "exact", 30),
        (torch.float32, "bf16", 12),
    ],
)
def test_a_resumed_search_equals_an_uninterrupted_one(tmp_path, dtype, precision, at):
    x = matrix(dtype)
    ref = gg.knn_graph(x, k=6, tile=TILE, precision=precision)
    path = tmp_path / "knn.npz"
    interrupted(x, path, at, k=6, tile=TILE, precision=precision)
    assert ck.saved_progress(path) == (at, 45)
    seen = []
    g = gg.knn_graph(x, k=6, precision=precision, checkpoint=path, progress=lambda done, total: seen.append(done))
    assert seen == list(range(at, 46))  # the saved tiles are skipped, the tile size taken from the file
    assert torch.equal(g.indices, ref.indices) and torch.equal(g.weights, ref.weights)
    assert not path.exists()  # a finished search leaves no checkpoint


def test_a_memory_mapped_matrix_resumes_too(tmp_path):
    np.save(tmp_path / "x.npy", matrix().numpy())
    ref = gg.knn_graph(matrix(), k=4, tile=TILE)
    path = tmp_path / "knn.npz"
    interrupted(str(tmp_path / "x.npy"), path, 20, k=4, tile=TILE)
    interrupted(str(tmp_path / "x.npy"), path, 31, k=4)  # interrupted twice
    g = gg.knn_graph(str(tmp_path / "x.npy"), k=4, checkpoint=path)
    assert torch.equal(g.indices, ref.indices) and torch.equal(g.weights, ref.weights)


def test_ctrl_c_finishes_the_tile_in_flight_then_saves(tmp_path):
    x = matrix()
    ref = gg.knn_graph(x, k=5, tile=TILE)
    path = tmp_path / "knn.npz"

    def press_ctrl_c(done, total):
        if done == 10:
            os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        gg.knn_graph(x, k=5, tile=TILE, checkpoint=path, progress=press_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is handler  # the search's handler is gone
    assert ck.saved_progress(path) == (11, 45)  # the signal came after tile 10; tile 11 was finished
    g = gg.knn_graph(x, k=5, checkpoint=path)
    assert torch.equal(g.indices, ref.indices) and torch.equal(g.weights, ref.weights)


def test_a_running_search_saves_itself_periodically(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "SAVE_EVERY", 0.0)
    path = tmp_path / "knn.npz"
    seen = []
    gg.knn_graph(
        matrix(), k=5, tile=TILE, checkpoint=path, progress=lambda done, total: seen.append(ck.saved_progress(path))
    )
    assert seen == [(t, 45) for t in range(1, 46)]


def test_a_checkpoint_of_another_search_is_refused(tmp_path):
    path = tmp_path / "knn.npz"
    interrupted(matrix(), path, 7, k=5, tile=TILE)
    with pytest.raises(ValueError, match=r"another matrix.*delete it"):
        gg.knn_graph(matrix(seed=1), k=5, checkpoint=path)  # same shape, other rows
    with pytest.raises(ValueError, match=r"another search: k 5 \(now 6\)"):
        gg.knn_graph(matrix(), k=6, checkpoint=path)
    with pytest.raises(ValueError, match=r"another matrix: n 900 \(now 899\)"):
        gg.knn_graph(matrix()[:899], k=5, checkpoint=path)
    with pytest.raises(ValueError, match=r"another matrix: dtype 'float32' \(now 'float64'\)"):
        gg.knn_graph(matrix(torch.float64), k=5, checkpoint=path)
    with pytest.raises(ValueError, match="saved by a search with tile=100; pass tile=100"):
        gg.knn_graph(matrix(), k=5, tile=64, checkpoint=path)
    assert ck.saved_progress(path) == (7, 45)  # refused, not overwritten
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot be read.*delete it"):
        gg.knn_graph(matrix(), k=5, checkpoint=path)


def test_cli_graph_says_where_it_saved_and_resumes(tmp_path, capsys, monkeypatch):
    from gpugraph.tools import cli

    np.save(tmp_path / "x.npy", matrix(n=3000).numpy())
    args = ["graph", str(tmp_path / "x.npy"), "--k", "5", "--memory", "1MiB", "--progress"]  # 55 tiles
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    tiles = cli._RowsBar.tiles

    def ctrl_c_at_tile_9(self, done, total):
        tiles(self, done, total)
        if done == 9:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli._RowsBar, "tiles", ctrl_c_at_tile_9)
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "gpugraph graph: interrupted; 9 of 55 tiles saved" in err and f"tiles saved to {out / CHECKPOINT}" in err
    assert not (out / "indices.npy").exists()
    monkeypatch.setattr(cli._RowsBar, "tiles", tiles)
    assert main([*args, "--memory", "2GB", "--out", str(out)]) == 0  # another budget: the saved tile size is kept
    assert f"resuming from {out / CHECKPOINT}: 9 of 55 tiles were done" in capsys.readouterr().out
    for name in ("indices.npy", "weights.npy"):
        assert np.array_equal(np.load(out / name), np.load(tmp_path / "whole" / name))
    assert not (out / CHECKPOINT).exists()
