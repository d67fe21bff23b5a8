"""Graph measures and small kNN graphs on a busy machine: the same calls quiet and beside
busy processes, gpugraph's slow-down against igraph's (single-threaded) in the same run.

    python benchmarks/bench_load.py [--n 50000] [--busy 2] [--blocks 6] [--calls 8] [--threads 2]

A "busy" process is a Python loop that spins (and exits by itself after --seconds, or with
this script, so none is left behind). --busy of them are started once, then stopped
(SIGSTOP) and continued (SIGCONT) so that quiet and loaded blocks alternate: --blocks of each,
every case called --calls times a block. Alternating keeps the two conditions side by side
in time: on a shared machine the quiet speed drifts, and a single loaded window of a few
hundred milliseconds catches a burst of other work or a bad phase of the scheduler whole.
The table prints, per case, the medians over all blocks, the 90th percentile and the worst
of the loaded calls, the CPU time of a loaded call (a thread spinning at a barrier burns CPU
time while it waits for a descheduled partner), and the ratio loaded / quiet. The target
(DESIGN.md): within 3x of quiet, as single-threaded igraph is. The "1 thread" cases run
with torch.set_num_threads(1), which gpugraph's passes follow (and a kNN graph's GEMM with
them): what the ratio would be, and what it would cost, if small work never ran in parallel.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import statistics
import subprocess
import sys
import time

import igraph
import numpy as np
import torch
from _common import environment, row

import gpugraph as gg

_SPIN = "import time, sys\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def timed(fn, calls: int, walls: list[float], cpus: list[float]) -> None:
    """Call fn ``calls`` times; append each call's wall time and this process's CPU time."""
    for _ in range(calls):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)


def _die_with_parent() -> None:  # a stopped spinner cannot reach its deadline: Linux kills it
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def signal_all(processes, sig) -> None:
    for p in processes:
        os.kill(p.pid, sig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--small", type=int, default=2000, help="rows of the small kNN graph case")
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside the loaded runs")
    ap.add_argument("--blocks", type=int, default=6, help="quiet and loaded blocks, alternated")
    ap.add_argument("--calls", type=int, default=8, help="calls of each case in a block")
    ap.add_argument("--seconds", type=float, default=300.0, help="most seconds a busy process lives")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=args.n)
    centres = rng.normal(size=(10, 32))
    x = torch.tensor(centres[labels] + 1.5 * rng.normal(size=(args.n, 32)), dtype=torch.float32)
    g = gg.knn_graph(x, k=args.k)
    small = torch.randn(args.small, 32, generator=torch.Generator().manual_seed(1))

    coo = g.to_scipy("mean").tocoo()
    upper = coo.row < coo.col
    ig = igraph.Graph(n=args.n, edges=list(zip(coo.row[upper].tolist(), coo.col[upper].tolist(), strict=True)))
    weights, membership = coo.data[upper].tolist(), labels.tolist()
    union = g.to_scipy("max", weighted=False).tocoo()
    upper = union.row < union.col
    ig_union = igraph.Graph(
        n=args.n, edges=list(zip(union.row[upper].tolist(), union.col[upper].tolist(), strict=True))
    )

    def fresh():  # a graph as knn_graph returns it: what a measure derives is computed in the call
        return gg.KnnGraph(g.indices, g.weights, validate=False)

    def alone(fn):  # gpugraph's passes follow torch's thread count
        def call():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(args.threads)

        return call

    cases = {
        "modularity (cold)": lambda: gg.modularity(fresh(), labels),
        "modularity (warm)": lambda: gg.modularity(g, labels),
        "modularity (cold), 1 thread": alone(lambda: gg.modularity(fresh(), labels)),
        "modularity (warm), 1 thread": alone(lambda: gg.modularity(g, labels)),
        "triangles (cold)": lambda: gg.triangles(fresh()),
        f"knn_graph {args.small} x 32": lambda: gg.knn_graph(small, k=args.k),
        f"knn_graph {args.small} x 32, 1 thread": alone(lambda: gg.knn_graph(small, k=args.k)),
        "igraph modularity": lambda: ig.modularity(membership, weights=weights),
        "igraph triangles": lambda: len(ig_union.list_triangles()),
    }
    for fn in cases.values():  # compile and warm up outside the timed runs
        fn()
    print(environment())
    print(
        f"N={args.n}, k={args.k}; {args.blocks} quiet and {args.blocks} loaded blocks alternated, "
        f"{args.calls} calls of each case a block, beside {args.busy} busy processes"
    )
    walls = {(name, loaded): [] for name in cases for loaded in (False, True)}
    cpus = {(name, loaded): [] for name in cases for loaded in (False, True)}
    spinners = [
        subprocess.Popen([sys.executable, "-c", _SPIN, str(args.seconds)], preexec_fn=_die_with_parent)
        for _ in range(args.busy)
    ]
    try:
        for _ in range(args.blocks):
            for loaded in (False, True):
                signal_all(spinners, signal.SIGCONT if loaded else signal.SIGSTOP)
                time.sleep(0.6)  # the scheduler settles, and gpugraph leaves one-thread mode (HOLD)
                for name, fn in cases.items():
                    timed(fn, args.calls, walls[name, loaded], cpus[name, loaded])
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    widths = (32, 11, 12, 9, 11, 9, 12)
    print(row("case", "quiet [ms]", "loaded [ms]", "p90 [ms]", "worst [ms]", "cpu [ms]", "loaded/quiet", widths=widths))
    for name in cases:
        quiet, busy = statistics.median(walls[name, False]), statistics.median(walls[name, True])
        cpu = statistics.median(cpus[name, True])
        p90 = statistics.quantiles(walls[name, True], n=10)[-1]
        tail = (f"{p90 * 1e3:.1f}", f"{max(walls[name, True]) * 1e3:.1f}")
        cells = (f"{quiet * 1e3:.1f}", f"{busy * 1e3:.1f}", *tail, f"{cpu * 1e3:.1f}")
        print(row(name, *cells, f"{busy / quiet:.2f}x", widths=widths))


if __name__ == "__main__":
    main()
