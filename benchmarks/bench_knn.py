"""Exact cosine kNN graph on the CPU: gpugraph against faiss and torch mm+topk, same run.

    python benchmarks/bench_knn.py [--sizes 10000 50000] [--dim 512] [--k 10] [--threads 2]

Prints one row per (N, method): median time of --repeats runs and gpugraph's speed-up
over that method. Also runs N=200k, D=32 in a child process and reports its peak memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import torch
from _common import environment, median_time, peak_rss_kib, row

import gpugraph as gg


def torch_blocks(x: torch.Tensor, k: int, block: int = 4096):
    """The plain baseline: normalise, then mm + topk(k + 1) per row block, drop self."""
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
    print(f"exact cosine kNN, D={args.dim}, k={args.k}, median of {args.repeats}")
    print(row("N / method", "time [s]", "gpugraph x", "agree"))
    for n in args.sizes:
        x = torch.randn(n, args.dim, generator=torch.Generator().manual_seed(n))
        ours = gg.knn_graph(x, k=args.k)
        t_ours = median_time(lambda: gg.knn_graph(x, k=args.k), args.repeats)
        print(row(f"{n} gpugraph", f"{t_ours:.3f}", "1.00", "-"))
        ref_i, _ = torch_blocks(x, args.k)
        agree = float((ref_i.sort(1).values == ours.indices.sort(1).values).all(1).float().mean())
        t_torch = median_time(lambda: torch_blocks(x, args.k), args.repeats)
        print(row(f"{n} torch mm+topk", f"{t_torch:.3f}", f"{t_torch / t_ours:.2f}", f"{agree:.4f}"))
        if faiss is not None:
            xa = x.numpy()
            _, fi = faiss_flat(xa, args.k)
            agree = float((np.sort(fi[:, 1:], 1) == ours.indices.sort(1).values.numpy()).all(1).mean())
            t_faiss = median_time(lambda: faiss_flat(xa, args.k), args.repeats)
            print(row(f"{n} faiss IndexFlatIP", f"{t_faiss:.3f}", f"{t_faiss / t_ours:.2f}", f"{agree:.4f}"))
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", "--threads", str(args.threads), "--k", str(args.k),
         "--memory-n", str(args.memory_n), "--memory-d", str(args.memory_d)],
        capture_output=True, text=True, check=True,
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
