"""Dense GBS layer similarity: gpugraph against the paper's formula on N x N matrices.

    python benchmarks/bench_similarity.py [--sizes 5000 20000] [--d1 256] [--d2 512]

The reference builds both dense cosine graphs (N x N, float64, zero diagonal) and takes
the mean row cosine, as the definition reads. gpugraph computes the same number without
any N x N matrix (``gg.layer_similarity(x1, x2)``). Each (method, N) runs in a child
process so that its peak resident memory is its own; times are medians of --repeats.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
from _common import environment, median_time, peak_rss_kib, row

import gpugraph as gg


def dense_reference(x1: torch.Tensor, x2: torch.Tensor) -> float:
    graphs = []
    for x in (x1, x2):
        u = x.double()
        u = u / u.norm(dim=1, keepdim=True)
        a = u @ u.T
        a.fill_diagonal_(0.0)
        graphs.append(a)
    a1, a2 = graphs
    return float(((a1 * a2).sum(1) / (a1.norm(dim=1) * a2.norm(dim=1))).mean())


def inputs(n: int, d1: int, d2: int):
    g = torch.Generator().manual_seed(n)
    x1 = torch.randn(n, d1, generator=g)
    mix = torch.randn(d1, d2, generator=g) / d1**0.5
    return x1, torch.relu(x1 @ mix) + 0.5 * torch.randn(n, d2, generator=g)


def child(method: str, n: int, d1: int, d2: int, repeats: int) -> None:
    x1, x2 = inputs(n, d1, d2)
    fn = {"gpugraph": lambda: gg.layer_similarity(x1, x2), "dense": lambda: dense_reference(x1, x2)}[method]
    base = peak_rss_kib()
    value = fn()
    added = peak_rss_kib() - base
    t = median_time(fn, repeats, warmup=0)
    print(f"{t:.6f} {added / 2**20:.4f} {value!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--d1", type=int, default=256)
    ap.add_argument("--d2", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], int(args.child[1]), args.d1, args.d2, args.repeats)
        return
    print(environment())
    print(f"dense LSim, D1={args.d1}, D2={args.d2}; median of {args.repeats}; memory: peak RSS added by the call")
    print(row("N / method", "time [s]", "time ratio", "mem [GiB]", "|diff|", widths=(20, 10, 10, 10, 10)))
    for n in args.sizes:
        results = {}
        for method in ("gpugraph", "dense"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    method,
                    str(n),
                    "--d1",
                    str(args.d1),
                    "--d2",
                    str(args.d2),
                    "--threads",
                    str(args.threads),
                    "--repeats",
                    str(args.repeats),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            t, mem, value = out.stdout.split()
            results[method] = (float(t), float(mem), float(value))
        ours = results["gpugraph"]
        for method, (t, mem, value) in results.items():
            print(
                row(
                    f"{n} {method}",
                    f"{t:.3f}",
                    f"{t / ours[0]:.1f}x",
                    f"{mem:.2f}",
                    f"{abs(value - ours[2]):.1e}",
                    widths=(20, 10, 10, 10, 10),
                )
            )


if __name__ == "__main__":
    main()
