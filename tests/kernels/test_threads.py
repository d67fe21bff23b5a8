"""How the compiled CPU passes share their work between threads (gpugraph/kernels/threads.py):
each chunk once, a late thread's chunks taken by the others, the same numbers on any number
of threads, and the same as the references when every pass runs in parallel."""

import networkx as nx
import numba
import numpy as np
import pytest
import torch
from helpers import clustered, nx_reference_modularity

import gpugraph as gg
from gpugraph.kernels import threads
from gpugraph.kernels.threads import claim, parallel


@numba.njit(parallel=True, nogil=True)
def _visit(owner, visits, state, chunks, workers):
    """visits[c]: how many times chunk c was claimed; owner[c]: by which loop."""
    for w in numba.prange(workers):
        c = claim(state)
        while c < chunks:
            visits[c] += 1
            owner[c] = w
            c = claim(state)


@numba.njit(nogil=True)
def _busy(steps, seed):
    """About ``steps`` dependent multiply-adds (a few ns each): time spent, not skipped."""
    acc = seed
    for _ in range(steps):
        acc = acc * 1.0000001 + 1e-9
    return acc


@numba.njit(parallel=True, nogil=True)
def _late_second(owner, sink, state, chunks, workers, delay):
    """Loop 1 starts ``delay`` steps late (a thread descheduled, or slow to wake, on a busy
    machine); each chunk takes 10^5 steps, so loop 0 alone needs 64 x 10^5 << delay."""
    for w in numba.prange(workers):
        sink[w] = _busy(delay if w == 1 else 0, 1.0)
        c = claim(state)
        while c < chunks:
            sink[w] += _busy(100_000, sink[w])
            owner[c] = w
            c = claim(state)


def test_every_chunk_is_claimed_once_by_threads_racing_for_them():
    chunks = 200_000  # the two threads claim at the same time, over and over
    owner, visits = np.full(chunks, -1, dtype=np.int64), np.zeros(chunks, dtype=np.int64)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    _visit(owner, visits, np.zeros(1, dtype=np.int64), chunks, 2)
    assert (visits == 1).all()
    assert set(np.unique(owner)) <= {0, 1}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_a_late_thread_leaves_its_chunks_to_the_others():
    # numba's static split gives loop 1 half the rows whatever happens; claiming does not
    chunks = 64
    owner, sink = np.full(chunks, -1, dtype=np.int64), np.zeros(2)
    numba.set_num_threads(2)
    _late_second(owner, sink, np.zeros(1, dtype=np.int64), chunks, 2, 3 * 10**8)
    assert (owner == 0).all()


def test_the_thread_count_follows_torch_and_small_work_runs_alone(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert threads.threads() == numba.config.NUMBA_NUM_THREADS  # never more than numba started
    assert threads.threads(threads.SERIAL_WORK - 1) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # a rank under torchrun
    assert threads.threads() == 1
    owner, visits = np.full(5, -1, dtype=np.int64), np.zeros(5, dtype=np.int64)
    assert parallel(_visit, owner, visits, chunks=5) == 1
    assert (visits == 1).all() and (owner == 0).all()


@pytest.fixture
def every_pass_parallel(monkeypatch):
    """Every compiled pass on (up to) two threads, however small its work."""
    monkeypatch.setattr(threads, "SERIAL_WORK", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)


def test_the_measures_equal_the_references_with_every_pass_in_parallel(every_pass_parallel):
    x, labels = clustered(n=300, d=8, classes=3, spread=1.0, seed=4)
    g = gg.knn_graph(x, k=6)
    want = nx_reference_modularity(g.to_scipy("mean").toarray(), labels)
    assert gg.modularity(g, labels) == pytest.approx(want, abs=1e-12)
    union = g.to_networkx("max", weighted=False)
    assert gg.triangles(g) == sum(nx.triangles(union).values()) // 3
    assert gg.transitivity(g) == pytest.approx(nx.transitivity(union), abs=1e-12)
    # the exact search: each row's neighbours are its k most similar other rows (float64)
    u = torch.nn.functional.normalize(x.double(), dim=1)
    s = u @ u.T
    s.fill_diagonal_(-np.inf)
    assert (g.indices.sort(dim=1).values == s.topk(6, dim=1).indices.sort(dim=1).values).all()


def test_the_numbers_do_not_depend_on_the_thread_count(every_pass_parallel, monkeypatch):
    x, labels = clustered(n=500, d=16, classes=4, spread=1.1, seed=7)
    results = []
    for count in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda count=count: count)
        g = gg.knn_graph(x, k=8)
        results.append((g.indices, g.weights, gg.modularity(g, labels), gg.triangles(g), gg.motifs(g, labels)))
    (i1, w1, q1, t1, m1), (i2, w2, q2, t2, m2) = results
    assert torch.equal(i1, i2) and torch.equal(w1, w2)
    assert q1 == q2 and t1 == t2 and m1 == m2  # bit for bit: sums in a fixed number of chunks


def test_float_sums_are_taken_in_the_same_chunks_on_any_number_of_threads(every_pass_parallel, monkeypatch):
    from gpugraph.kernels import graph_cpu

    # one edge a row, weights whose sum depends on the grouping: in row order
    # ((1e16 + 1) - 1e16) + 1 = 1, in two halves (1e16 + 1) + (-1e16 + 1) = 0
    rows, cols = np.arange(5, dtype=np.int64), np.array([1, 0, 3, 2], dtype=np.int64)
    weights = np.array([1e16, 1.0, -1e16, 1.0])
    args = (rows, cols, weights, np.zeros(4, np.bool_), np.zeros(4), np.zeros(4, np.int64), 1, 3, True, False, True)
    totals = set()
    for count in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda count=count: count)
        totals.add(graph_cpu.modularity_sums(*args)[0])
    assert totals == {1.0}
