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

numba's threads stay OpenMP's (shared with nothing else; their barrier still spins for a
while before it sleeps). A pool of Python threads that sleep at once was tried: it loses its
quiet speed to that same spinning of torch's threads and to the GIL its helpers need between
calls (modularity of a 50k-node graph 6 -> 10 ms), and was no faster under load.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The next unclaimed chunk of the call whose counter is ``state`` (an int64 array, first
    entry 0 at the start): 0, 1, 2, ... across all threads, each index to one thread."""
    return _fetch_add(state)  # type: ignore[call-arg]  # the typing context is numba's to pass


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


def threads(work: int | None = None) -> int:
    """How many threads a pass of ``work`` element steps runs on: as many as torch uses
    (torch.set_num_threads, OMP_NUM_THREADS, 1 a rank under torchrun), never more than numba
    started, and one below :data:`SERIAL_WORK`."""
    if work is not None and work < SERIAL_WORK:
        return 1
    # numba.config sets its attributes from the environment at import: invisible to mypy
    started = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    return max(1, min(torch.get_num_threads(), started))


def parallel(kernel: Callable[..., Any], *args: Any, chunks: int, work: int | None = None, counters: int = 1) -> int:
    """Run the pass ``kernel(*args, state, chunks, workers)`` on :func:`threads` (``work``)
    threads, ``workers`` of them, ``state`` holding ``counters`` chunk counters (a pass with
    two loops claims the second's chunks from ``state[1:]``); the count."""
    workers = threads(work)
    numba.set_num_threads(workers)  # this calling thread's setting (numba keeps one a thread)
    kernel(*args, np.zeros(counters, dtype=np.int64), chunks, workers)
    return workers
