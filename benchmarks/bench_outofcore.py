"""kNN graph of a matrix read from a memory-mapped .npy file, beside faiss on the same data.

    python benchmarks/bench_outofcore.py [--n 1000000] [--dim 64] [--k 10] [--threads 2]

The data (clustered float32 rows) is written once to --file. gpugraph reads it through
``np.load(path, mmap_mode="r")`` a block of rows at a time; faiss IndexFlatIP gets the whole
normalised matrix in memory (it has no out-of-core mode). Each method runs once, in its own
child process, so that its peak memory (VmHWM) is its own; VmHWM counts the pages of the
mapped file that were read, so "beyond the file" subtracts the file's size. Agreement is
checked on 2000 random rows against an exact float64 search of those rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import environment, peak_rss_kib, row


def make_data(path: Path, n: int, d: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, d)).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for r0 in range(0, n, 100_000):
        r1 = min(n, r0 + 100_000)
        x[r0:r1] = centres[rng.integers(0, 100, r1 - r0)] + rng.normal(size=(r1 - r0, d)).astype(np.float32)
    x.flush()


def child(method: str, path: str, k: int, out: str) -> None:
    start = time.perf_counter()
    if method == "gpugraph":
        import gpugraph as gg

        g = gg.knn_graph(np.load(path, mmap_mode="r"), k=k)
        indices = g.indices.numpy()
    else:
        import faiss

        x = np.load(path)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        _, found = index.search(x, k + 1)
        own = np.arange(len(x))[:, None]  # drop each row itself (a duplicate may come first)
        indices = np.stack([r[r != i][:k] for r, i in zip(found, own[:, 0], strict=True)])
    seconds = time.perf_counter() - start
    np.save(out, indices)
    print(json.dumps({"seconds": seconds, "peak_bytes": peak_rss_kib() * 1024}))


def agreement(path: Path, indices: np.ndarray, k: int, rows: np.ndarray) -> float:
    """Share of the sampled rows whose neighbour set equals an exact float64 search's."""
    x = np.load(path, mmap_mode="r")
    q = np.asarray(x[rows], dtype=np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    best = np.full((len(rows), k), -np.inf)
    best_i = np.zeros((len(rows), k), dtype=np.int64)
    for c0 in range(0, len(x), 20_000):
        block = np.asarray(x[c0 : c0 + 20_000], dtype=np.float64)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        s = q @ block.T  # (rows, 20000)
        own = (rows >= c0) & (rows < c0 + len(block))
        s[own, rows[own] - c0] = -np.inf
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.concatenate([best, np.take_along_axis(s, top, 1)], axis=1)
        idx = np.concatenate([best_i, top + c0], axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
        best, best_i = np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1)
    return float(np.mean([set(a) == set(b) for a, b in zip(indices[rows], best_i, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--file", default="/tmp/gpugraph_bench_outofcore.npy")
    ap.add_argument("--methods", nargs="+", default=["gpugraph", "faiss"])
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
        child(*args.child[:2], args.k, args.child[2])
        return
    path = Path(args.file)
    if not path.is_file() or np.load(path, mmap_mode="r").shape != (args.n, args.dim):
        make_data(path, args.n, args.dim)
    size = path.stat().st_size
    print(environment())
    print(f"N={args.n}, D={args.dim}, k={args.k}, float32 file {size / 2**30:.2f} GiB; one run per method")
    print(row("method", "time [s]", "peak [GiB]", "beyond file", "agree", widths=(12, 12, 12, 12, 8)))
    rows = np.random.default_rng(1).choice(args.n, 2000, replace=False)
    for method in args.methods:
        out = path.with_suffix(f".{method}.npy")
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                method,
                str(path),
                str(out),
                "--k",
                str(args.k),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        agree = agreement(path, np.load(out), args.k, rows)
        print(
            row(
                method,
                f"{result['seconds']:.1f}",
                f"{result['peak_bytes'] / 2**30:.2f}",
                f"{(result['peak_bytes'] - size) / 2**30:.2f}",
                f"{agree:.4f}",
                widths=(12, 12, 12, 12, 8),
            )
        )


if __name__ == "__main__":
    main()
