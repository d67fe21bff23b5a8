"""Graph measures and small kNN graphs on a busy machine: the same calls quiet and beside
busy processes, gpugraph's slow-down against igraph's (single-threaded) in the same run.

    python benchmarks/bench_load.py [--n 50000] [--busy 2] [--repeats 25] [--threads 2]

A "busy" process is a Python loop that spins for at most --seconds and exits (so none is
left behind); --busy of them run during the loaded half. Each case is timed --repeats times
quiet, then --repeats times loaded; the table prints medians, the worst call, the CPU time a
call used (a parallel region whose threads spin at a barrier burns CPU time while it waits
for a descheduled partner), and the ratio loaded / quiet. The target (DESIGN.md): within 3x
of quiet, as single-threaded igraph is.
"""

from __future__ import annotations

import argparse
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


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall time, worst wall time, median CPU time of this process) over repeats."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return statistics.median(walls), max(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--small", type=int, default=2000, help="rows of the small kNN graph case")
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside the loaded runs")
    ap.add_argument("--repeats", type=int, default=25)
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

    def fresh():  # a graph as knn_graph returns it: the reciprocity is computed inside the call
        return gg.KnnGraph(g.indices, g.weights, validate=False)

    cases = {
        "modularity (cold)": lambda: gg.modularity(fresh(), labels),
        "modularity (warm)": lambda: gg.modularity(g, labels),
        "triangles (cold)": lambda: gg.triangles(fresh()),
        f"knn_graph {args.small} x 32": lambda: gg.knn_graph(small, k=args.k),
        "igraph modularity": lambda: ig.modularity(membership, weights=weights),
        "igraph triangles": lambda: len(ig_union.list_triangles()),
    }
    for fn in cases.values():  # compile and warm up outside the timed runs
        fn()
    print(environment())
    print(f"N={args.n}, k={args.k}; {args.repeats} calls each, quiet then beside {args.busy} busy processes")
    quiet = {name: timed(fn, args.repeats) for name, fn in cases.items()}
    spinners = [subprocess.Popen([sys.executable, "-c", _SPIN, str(args.seconds)]) for _ in range(args.busy)]
    try:
        time.sleep(0.5)  # the spinners are running
        loaded = {name: timed(fn, args.repeats) for name, fn in cases.items()}
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    widths = (26, 12, 12, 12, 12, 10)
    print(row("case", "quiet [ms]", "loaded [ms]", "worst [ms]", "cpu [ms]", "loaded/quiet", widths=widths))
    for name in cases:
        (q, _, _), (busy, worst, cpu) = quiet[name], loaded[name]
        print(
            row(
                name,
                f"{q * 1e3:.1f}",
                f"{busy * 1e3:.1f}",
                f"{worst * 1e3:.1f}",
                f"{cpu * 1e3:.1f}",
                f"{busy / q:.2f}x",
                widths=widths,
            )
        )


if __name__ == "__main__":
    main()
