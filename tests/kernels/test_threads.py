"""How the compiled CPU passes share their work between threads (gpugraph/kernels/threads.py):
each chunk once, a late thread's chunks taken by the others, the same numbers on any number
of threads, and the same as the references when every pass runs in parallel."""

import time

import networkx as nx
import numba
import numpy as np
import pytest
import torch
from helpers import clustered, nx_reference_modularity

import gpugraph as gg
from gpugraph.kernels import threads
from gpugraph.kernels.threads import claim, late, new_state, parallel, torch_region


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
def _late_second(owner, sink, delay, state, chunks, workers):
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
    _visit(owner, visits, new_state(), chunks, 2)
    assert (visits == 1).all()
    assert set(np.unique(owner)) <= {0, 1}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_a_late_thread_leaves_its_chunks_to_the_others():
    # numba's static split gives loop 1 half the rows whatever happens; claiming does not
    chunks = 64
    owner, sink = np.full(chunks, -1, dtype=np.int64), np.zeros(2)
    numba.set_num_threads(2)
    _late_second(owner, sink, 3 * 10**8, new_state(), chunks, 2)
    assert (owner == 0).all()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_each_thread_tallies_its_claims():
    chunks = 1000
    owner, visits = np.full(chunks, -1, dtype=np.int64), np.zeros(chunks, dtype=np.int64)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    state = new_state()
    _visit(owner, visits, state, chunks, 2)
    tallies = state[1:][::-1]  # thread 0's slot is the last
    assert state[0] == chunks + 2  # each loop's last claim finds nothing
    # every chunk tallied once, to the thread that took it, plus that last claim a thread
    assert sorted(tallies[:2]) == sorted((owner == w).sum() + 1 for w in range(2))
    assert (tallies[2:] == 0).all()


def test_a_late_thread_is_seen_from_the_tallies():
    # two threads, 64 chunks: a fair share is 32, late is under 8
    assert not late(np.array([33, 33, 0, 0]), 1, 64, 2)  # even
    assert not late(np.array([9, 57]), 1, 64, 2)  # 8 chunks: a quarter of a share, on time
    assert late(np.array([8, 58]), 1, 64, 2)  # 7 chunks
    assert late(np.array([1, 65]), 1, 64, 2)  # none: it arrived after the work was gone
    assert late(np.array([0, 66]), 1, 64, 2)  # it never ran: its loop ran on the other thread
    assert not late(np.array([1, 15]), 1, 14, 2)  # too few chunks to tell
    assert not late(np.zeros(4, dtype=np.int64), 1, 64, 2)  # a pass compiled before tallies


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_after_a_late_thread_small_work_runs_alone_for_a_while(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "_late_until", 0.0)
    assert threads.threads(threads.SMALL_WORK - 1) == 2
    owner, sink = np.full(64, -1, dtype=np.int64), np.zeros(2)
    # a pass whose second thread starts late (3 x 10^8 steps, far beyond the whole work)
    late_pass = (_late_second, owner, sink, 3 * 10**8)
    monkeypatch.setattr(threads, "LATE_SECONDS", float("inf"))  # too short a pass to judge
    assert parallel(*late_pass, chunks=64, work=threads.SMALL_WORK) == 2
    assert threads.threads(threads.SMALL_WORK - 1) == 2
    monkeypatch.setattr(threads, "LATE_SECONDS", 1e-3)
    assert parallel(*late_pass, chunks=64, work=threads.SMALL_WORK) == 2
    assert (owner == 0).all()
    assert threads.threads(threads.SMALL_WORK - 1) == 1  # small work: one thread, no partner to wait for
    assert threads.threads(threads.SMALL_WORK) == 2  # larger work is still split
    monkeypatch.setattr(time, "monotonic", lambda: threads._late_until + 1e-3)
    assert threads.threads(threads.SMALL_WORK - 1) == 2  # after HOLD seconds, parallel again


@numba.njit(parallel=True, nogil=True)
def _work(sink, steps, state, chunks, workers):
    """``chunks`` chunks of ``steps`` multiply-adds each."""
    for w in numba.prange(workers):
        c = claim(state)
        while c < chunks:
            sink[w] += _busy(steps, 1.0)
            c = claim(state)


def test_a_pass_whose_calling_thread_lost_its_core_sends_small_work_to_one_thread(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "_late_until", 0.0)
    sink = np.zeros(2)
    _work(sink, 10, new_state(), 2, 1)  # compiled outside the timed passes
    monkeypatch.setattr(time, "thread_time", lambda: 0.0)  # the caller's CPU time stands still: off its core
    parallel(_work, sink, 10, chunks=2, work=1)  # a pass too short to judge (well under 1 ms)
    assert threads.threads(threads.SMALL_WORK - 1) == 2
    parallel(_work, sink, 10**6, chunks=4, work=1)  # some milliseconds on one thread, no partner to be late
    assert threads.threads(threads.SMALL_WORK - 1) == 1
    assert threads.threads(threads.SMALL_WORK) == 2


def test_a_pass_on_its_core_throughout_leaves_the_thread_count_alone(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "_late_until", 0.0)
    sink = np.zeros(2)
    clock = iter(range(10**6))  # the caller's CPU time keeps pace with the wall clock
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock) * 1.0)
    monkeypatch.setattr(time, "thread_time", lambda: next(clock) * 1.0)
    parallel(_work, sink, 10, chunks=2, work=1)  # one clock step a read: 2 s wall, 2 s CPU
    assert threads.threads(threads.SMALL_WORK - 1) == 2


def test_torch_operations_in_a_region_follow_the_hold(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(threads, "_late_until", 0.0)
        with torch_region(1000):
            assert torch.get_num_threads() == 2  # a quiet machine: torch as the user set it
        with torch_region(1000):
            time.sleep(0.01)  # 10 ms off the core (waiting is not running)
        assert threads._late_until > time.monotonic()
        with torch_region(threads.SMALL_WORK - 1):
            assert torch.get_num_threads() == 1  # held: no pool to wake beside a busy machine
        assert torch.get_num_threads() == 2  # and restored
        with torch_region(threads.SMALL_WORK):
            assert torch.get_num_threads() == 2  # large work stays on torch's threads
    finally:
        torch.set_num_threads(before)


def test_a_knn_graphs_products_run_on_one_thread_while_held(monkeypatch):
    from gpugraph.knn import tiles

    products, gemm = [], tiles._gemm
    monkeypatch.setattr(tiles, "_gemm", lambda *args: products.append(torch.get_num_threads()) or gemm(*args))
    x, _ = clustered(n=300, d=8, classes=3, spread=1.0, seed=4)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(threads, "_late_until", time.monotonic() + 3600)  # a busy machine
        held = gg.knn_graph(x, k=6)
        assert products and set(products) == {1}
        monkeypatch.setattr(threads, "_late_until", 0.0)
        products.clear()
        quiet = gg.knn_graph(x, k=6)
        assert set(products) == {2}
    finally:
        torch.set_num_threads(before)
    assert torch.equal(held.indices, quiet.indices) and torch.equal(held.weights, quiet.weights)


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
    """Every compiled pass on (up to) two threads, however small its work and whatever
    the machine's load."""
    monkeypatch.setattr(threads, "SERIAL_WORK", 0)
    monkeypatch.setattr(threads, "SMALL_WORK", 0)
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
