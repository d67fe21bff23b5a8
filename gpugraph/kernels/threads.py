"""How the compiled (numba) CPU passes run in parallel: one loop per thread, each claiming
chunks of the work from a shared counter until none is left.

A pass is split in a fixed number of chunks (so its floating-point sums never depend on the
thread count) and written as::

    @numba.njit(parallel=True, nogil=True, cache=True)
    def _pass(..., state, chunks, workers):
        for w in numba.prange(workers):  # one iteration a thread
            c = claim(state)
            while c < chunks:
                ...  # chunk c of chunks
                c = claim(state)

and run with ``parallel(_pass, *args, chunks=chunks, work=steps)``, which sets ``workers`` to
the thread count. A pass that keeps accumulators per thread (integer sums, which any order
gives alike) uses row ``w`` of them; there are ``threads(work)`` rows.

Why claiming rather than numba's static split of the rows: on a machine with more runnable
processes than cores, a thread of the parallel region is descheduled now and then; with a
static split its share waits for it while the others spin at the region's barrier (a few
milliseconds of work took up to 700 ms from call to call, benchmarks/bench_load.py). With
claiming, a thread that is descheduled, or late to start, leaves its chunks to the others, and
the region waits at most for the one chunk it holds. On a quiet machine it also helps: torch's
OpenMP threads spin for a while after each torch operation and take CPU time from one of
ours, whose chunks the other takes over.

A region still ends only when every thread has arrived, and a thread that lost its core
arrives a scheduler time slice late. So each pass's claims are tallied a thread
(:func:`claim`, :func:`new_state`); when a thread took less than a quarter of its share
(:func:`late`), or the calling thread itself was off its core for a quarter of the pass
(:data:`OFF_CORE`: its CPU time short of the wall time, which also catches passes already
on one thread, and torch's operations), passes under :data:`SMALL_WORK` steps run on the
calling thread alone for :data:`HOLD` seconds (:func:`threads`), and so does a kNN graph's
small GEMM (:func:`torch_region`: torch's pool, whose idle threads spin, is not woken). On
a busy machine one thread does few-millisecond work at its quiet speed when the scheduler
leaves it a core, and gets half a core when it shares one with a busy process (a small kNN
graph: 10 ms of CPU in 19-23 ms); two threads lose more (modularity of a 50k-node graph, the
reverse edges looked up: 16 ms loaded against 2.7-7 ms on one thread, as each region waits
for its partner's next slice). On a quiet machine no thread comes late.

numba's threads stay OpenMP's (shared with nothing else; their barrier still spins for a
while before it sleeps). A pool of Python threads that sleep at once was tried: it loses its
quiet speed to that same spinning of torch's threads and to the GIL its helpers need between
calls (modularity of a 50k-node graph 6 -> 10 ms), and was no faster under load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

SERIAL_WORK = 1 << 18
"""Below this many element steps (about a millisecond on one core) a pass runs on the calling
thread alone: the quiet machine loses nothing measurable below it (modularity of a 20k-node
graph: 3.0 ms), and a busy one has no region to wait for."""


@intrinsic
def _fetch_add(typingctx, state):
    """state[0] += 1 atomically; the old value."""
    sig = types.int64(state)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", array.data, one, "monotonic")

    return sig, codegen


@numba.njit(inline="always")
def claim(state):
    """The next unclaimed chunk of the call whose counter is ``state`` (an int64 array from
    :func:`new_state`, or a slice of one starting at a counter): 0, 1, 2, ... across all
    threads, each index to one thread. Each call is tallied in the calling thread's slot at
    the end of the array, which :func:`parallel` reads.

    Every pass inlines this, and numba caches a compiled pass by the file that defines it
    alone: after changing it, touch graph_cpu.py, topk_cpu.py and rows_cpu.py."""
    c = _fetch_add(state)  # type: ignore[call-arg,var-annotated]  # the typing context is numba's to pass
    state[len(state) - 1 - numba.get_thread_id()] += 1  # ids run 0..threads - 1 (numba's contract)
    return c


def new_state(counters: int = 1) -> np.ndarray:
    """The array a pass claims from: ``counters`` chunk counters, then one tally slot for
    each thread numba may run (the last for thread 0), all zero."""
    # numba.config sets its attributes from the environment at import: invisible to mypy
    return np.zeros(counters + numba.config.NUMBA_NUM_THREADS, dtype=np.int64)  # type: ignore[attr-defined]


@numba.njit(inline="always")
def span(start, stop, c, chunks):
    """Chunk c of ``chunks`` of the range start..stop: (its first, one past its last)."""
    return start + c * (stop - start) // chunks, start + (c + 1) * (stop - start) // chunks


CHUNKS = 64
"""The chunks a pass over rows is split in (fewer when there are fewer rows): enough for a
thread to take over another's share, few enough that a chunk is worth an atomic claim."""


def chunks_for(rows: int) -> int:
    """How many chunks a pass over ``rows`` rows takes: :data:`CHUNKS`, at most one a row."""
    return max(1, min(CHUNKS, rows))


SMALL_WORK = 1 << 21
"""Passes below this many element steps (a few milliseconds on one core) run on the calling
thread alone for :data:`HOLD` seconds after a pass found a thread late."""

HOLD = 0.5
"""Seconds small passes stay on one thread after a late thread was seen."""

LATE_SHARE = 4
"""A thread is late when it claimed less than 1/LATE_SHARE of its fair share of a pass's
chunks: it was descheduled, or started after the others had taken most of the work."""

LATE_SECONDS = 1e-3
"""Only passes that took this long are judged: a thread that missed three quarters of one
was descheduled, not merely slow to wake (tens of microseconds, more with many threads)."""

OFF_CORE = 0.25
"""A pass (or torch region) of at least :data:`LATE_SECONDS` during which the calling thread
was off its core for more than this share of the time (its CPU time short of the wall
time: descheduled, the machine busy) is judged like a pass with a late thread."""

_late_until = 0.0  # time.monotonic() until which small passes run on one thread


def _held(work: int | None) -> bool:
    """Whether work of this size runs on one thread because the machine is busy."""
    return work is not None and work < SMALL_WORK and time.monotonic() < _late_until


def threads(work: int | None = None) -> int:
    """How many threads a pass of ``work`` element steps runs on: as many as torch uses
    (torch.set_num_threads, OMP_NUM_THREADS, 1 a rank under torchrun), never more than numba
    started; one below :data:`SERIAL_WORK`, and one below :data:`SMALL_WORK` while the
    machine is busy (a thread was late within the last :data:`HOLD` seconds)."""
    if work is not None and work < SERIAL_WORK:
        return 1
    if _held(work):
        return 1
    # numba.config sets its attributes from the environment at import: invisible to mypy
    started = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    return max(1, min(torch.get_num_threads(), started))


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _judge(start: tuple[float, float], late_thread: Callable[[], bool]) -> None:
    """After a pass begun at ``start`` (:func:`_clocks`): hold small passes to one thread
    when it took at least :data:`LATE_SECONDS` and the calling thread was off its core for
    more than :data:`OFF_CORE` of it, or ``late_thread()`` says a partner came late."""
    global _late_until
    took = time.perf_counter() - start[0]
    if took < LATE_SECONDS:
        return
    away = took - (time.thread_time() - start[1])
    if away > OFF_CORE * took or late_thread():
        _late_until = time.monotonic() + HOLD


def parallel(kernel: Callable[..., Any], *args: Any, chunks: int, work: int | None = None, counters: int = 1) -> int:
    """Run the pass ``kernel(*args, state, chunks, workers)`` on :func:`threads` (``work``)
    threads, ``workers`` of them, ``state`` holding ``counters`` chunk counters (a pass with
    two loops claims the second's chunks from ``state[1:]``); the count. A pass of at least
    :data:`LATE_SECONDS` whose threads were not all on time (:func:`late`), or during which
    the calling thread lost its core (:data:`OFF_CORE`), sends the small passes that follow
    to one thread for :data:`HOLD` seconds."""
    workers = threads(work)
    numba.set_num_threads(workers)  # this calling thread's setting (numba keeps one a thread)
    state = new_state(counters)
    start = _clocks()
    kernel(*args, state, chunks, workers)
    _judge(start, lambda: workers > 1 and late(state[counters:], counters, chunks, workers))
    return workers


@contextmanager
def torch_region(work: int) -> Iterator[None]:
    """Run the torch operations inside (on the CPU) as a pass of ``work`` element steps:
    on one torch thread while small work is held to one (:func:`threads`), so that torch's
    pool neither wakes nor spins beside a busy machine's other processes; judged like a
    pass (:data:`OFF_CORE`). For a GEMM of m n d multiply-adds, ``work`` is about
    m n d / 32 (a core does some 32 float32 multiply-adds a nanosecond)."""
    before = torch.get_num_threads()
    alone = before > 1 and _held(work)
    if alone:
        torch.set_num_threads(1)
    start = _clocks()
    try:
        yield
    finally:
        if alone:
            torch.set_num_threads(before)
        _judge(start, lambda: False)


def late(tallies: np.ndarray, counters: int, chunks: int, workers: int) -> bool:
    """Whether a thread of a pass was late: it claimed less than 1/:data:`LATE_SHARE` of
    its share of the ``chunks`` (or never ran, its iteration done by another thread), from
    the threads' ``tallies`` of claims (each loop of a thread ends on one claim that finds
    nothing). Passes of fewer than ``2 LATE_SHARE`` chunks a thread say nothing, nor do
    passes compiled before the tally existed (a stale numba cache: no tallies at all)."""
    ran = tallies[tallies > 0]
    if chunks < 2 * LATE_SHARE * workers or len(ran) == 0:
        return False
    claimed = ran - counters
    return len(ran) < workers or claimed.min() * workers * LATE_SHARE < chunks
