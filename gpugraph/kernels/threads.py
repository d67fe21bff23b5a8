"""How many threads a compiled (numba) pass runs on: torch's count, or one for small work."""

from __future__ import annotations

import numba
import torch

SERIAL_WORK = 1 << 18
"""Below this many element steps (about a millisecond on one core) a compiled pass runs on
the calling thread alone: on a busy machine the threads of a parallel region wait for each
other at its barrier (spinning, then sleeping), and a few milliseconds of work took up to
700 ms when one of them was descheduled (benchmarks/bench_load.py). The threshold is where
the quiet machine loses nothing measurable (modularity of a 20k-node graph: 3.0 ms)."""


def use_threads(work: int | None = None) -> int:
    """Run numba's next parallel loops on as many threads as torch uses (torch.set_num_threads,
    OMP_NUM_THREADS, 1 a rank under torchrun), never more than numba started, and on one
    thread when ``work`` (element steps) is below :data:`SERIAL_WORK`; the count."""
    # numba.config sets its attributes from the environment at import: invisible to mypy
    started = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    threads = max(1, min(torch.get_num_threads(), started))
    numba.set_num_threads(1 if work is not None and work < SERIAL_WORK else threads)
    return numba.get_num_threads()
