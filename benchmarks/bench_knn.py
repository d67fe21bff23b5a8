"""Exact cosine kNN graph on the CPU: gpugraph against faiss and torch mm+topk, same run.

    python benchmarks/bench_knn.py [--sizes 10000 50000] [--dim 512] [--k 10] [--threads 2]
    python benchmarks/bench_knn.py --cases 50000x512 100000x128 --ks 10 100 --memory-n 0

Prints one row per (N, D, k, method): median time of --repeats runs (each run's result is
checked, so no run is spent only on warming up; the compiled code is loaded first on a small
input) and gpugraph's speed-up over that method, with the share of rows whose neighbour set
equals gpugraph's. Also runs N=200k, D=32 in a child process and reports its peak memory
(--memory-n 0 skips it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from functools import partial

import numpy as np
import torch
from _common import environment, peak_rss_kib, row

import gpugraph as gg


def torch_blocks(x: torch.Tensor, k: int, block: int | None = None):
    """The plain baseline: normalise, then mm + topk(k + 1) per row block (4096 rows, fewer
    when a block of similarities would pass 1 GiB), drop self."""
    block = block or max(256, min(4096, (1 << 28) // len(x)))
    xn = x / x.norm(dim=1, keepdim=True)
    out_i, out_v = [], []
    for r0 in range(0, len(xn), block):
        s = xn[r0 : r0 + block] @ xn.T  # (b, N)
        s[torch.arange(len(s)), torch.arange(r0, r0 + len(s))] = -2.0
        v, i = torch.topk(s, k, dim=1)
        out_i.append(i)
        out_v.append(v)
    return torch.cat(out_i), torch.cat(out_v)


def faiss_flat(x: np.ndarray, k: int):
    import faiss

    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    return index.search(xn, k + 1)  # the first hit is the point itself


def timed(fn, repeats: int):
    """(median seconds of ``repeats`` calls, the last call's result)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_memory_child(n: int, d: int, k: int) -> None:
    x = torch.randn(n, d)
    base = peak_rss_kib()
    gg.knn_graph(x, k=k)
    peak = peak_rss_kib()
    print(f"{peak / 2**20:.2f} {(peak - base) / 2**20:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cases", nargs="+", help="NxD cases (replace --sizes and --dim)")
    ap.add_argument("--ks", type=int, nargs="+", help="several k (replaces --k)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-n", type=int, default=200_000)
    ap.add_argument("--memory-d", type=int, default=32)
    ap.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak_child:
        peak_memory_child(args.memory_n, args.memory_d, args.k)
        return
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        faiss = None
    print(environment())
    cases = (
        [tuple(int(v) for v in c.split("x")) for c in args.cases] if args.cases else [(n, args.dim) for n in args.sizes]
    )
    gg.knn_graph(torch.randn(600, 8), k=3)  # load the compiled code once, outside the timings
    print(f"exact cosine kNN, median of {args.repeats}")
    print(row("N x D, k / method", "time [s]", "gpugraph x", "agree", widths=(34, 10, 11, 8)))
    for n, d in cases:
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
        for k in args.ks or [args.k]:
            t_ours, ours = timed(partial(gg.knn_graph, x, k=k), args.repeats)
            mine = ours.indices.sort(1).values.numpy()
            print(row(f"{n} x {d}, k={k} gpugraph", f"{t_ours:.3f}", "1.00", "-", widths=(34, 10, 11, 8)))
            t_torch, (ref_i, _) = timed(partial(torch_blocks, x, k), args.repeats)
            agree = float((ref_i.sort(1).values.numpy() == mine).all(1).mean())
            print(
                row(
                    f"{n} x {d}, k={k} torch mm+topk",
                    f"{t_torch:.3f}",
                    f"{t_torch / t_ours:.2f}",
                    f"{agree:.4f}",
                    widths=(34, 10, 11, 8),
                )
            )
            if faiss is not None:
                xa = x.numpy()
                t_faiss, (_, fi) = timed(partial(faiss_flat, xa, k), args.repeats)
                agree = float((np.sort(fi[:, 1:], 1) == mine).all(1).mean())
                print(
                    row(
                        f"{n} x {d}, k={k} faiss IndexFlatIP",
                        f"{t_faiss:.3f}",
                        f"{t_faiss / t_ours:.2f}",
                        f"{agree:.4f}",
                        widths=(34, 10, 11, 8),
                    ),
                    flush=True,
                )
    if not args.memory_n:
        return
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--peak-child",
            "--threads",
            str(args.threads),
            "--k",
            str(args.k),
            "--memory-n",
            str(args.memory_n),
            "--memory-d",
            str(args.memory_d),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    peak, added = out.stdout.split()
    full = args.memory_n**2 * 4 / 2**30
    print(
        f"peak RSS for N={args.memory_n}, D={args.memory_d}, k={args.k}: {float(peak):.2f} GiB "
        f"({float(added):.2f} GiB above the process with its input; the N x N float32 matrix "
        f"would be {full:.0f} GiB)"
    )


if __name__ == "__main__":
    main()
