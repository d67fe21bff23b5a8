"""gpugraph.distributed on the CPU: the kNN graph of one .npy matrix in 1 and in P processes.

    python benchmarks/bench_distributed.py [--n 100000] [--dim 64] [--k 10] [--procs 1 2]

Runs `torchrun --standalone --nproc-per-node=P -m gpugraph graph X.npy` for each P (gloo),
each rank with --threads / P torch threads so that the machine's cores are shared the same
way, and prints the time, the peak memory of the largest rank, and the bytes each rank sent
beside the half ring's formula S x N/P x (D x 4 + k x 12), S = floor(P / 2) (rows and lists).
All runs must give the same graph up to float32 rounding: the ranks re-score kept pairs one
at a time while one process reads them off its GEMM tiles, so two neighbours whose cosines
differ by less than float32 rounding may swap; the script counts such rows and checks that
all weights agree to the rounding bound (D + 2) 2^-23 of a float32 dot product of unit rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import environment, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:  # the data and torchrun's logs go with it
        tmp = Path(d)
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(100, args.dim)).astype(np.float32)
        x = centres[rng.integers(0, 100, args.n)] + rng.normal(size=(args.n, args.dim)).astype(np.float32)
        np.save(tmp / "x.npy", x)
        print(environment())
        print(f"N={args.n}, D={args.dim}, k={args.k}; gloo on one machine, {args.threads} cores shared by the ranks")
        print(
            row(
                "processes",
                "time [s]",
                "peak [GiB]",
                "sent/rank [MB]",
                "formula [MB]",
                "rows with swaps",
                widths=(10, 10, 11, 15, 13, 15),
            )
        )
        first = None
        for p in args.procs:
            out = tmp / f"out{p}"
            threads = str(max(1, args.threads // p))
            env = {**os.environ, "OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads}
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={p}",
                "--log-dir",
                str(tmp / "logs"),
                "-m",
                "gpugraph",
                "graph",
                str(tmp / "x.npy"),
                "--k",
                str(args.k),
                "--out",
                str(out),
            ]
            subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            summary = json.loads((out / "summary.json").read_text())
            indices, weights = np.load(out / "indices.npy"), np.load(out / "weights.npy")
            first = (indices, weights) if first is None else first
            swapped = int((indices != first[0]).any(axis=1).sum())
            if np.abs(weights - first[1]).max() > (args.dim + 2) * 2.0**-23:
                raise SystemExit(f"{p} processes gave another graph than {args.procs[0]}")
            sent = max(summary.get("bytes_sent_per_rank", [0]))
            formula = (p // 2) * args.n / p * (args.dim * 4 + args.k * 12)
            print(
                row(
                    p,
                    f"{summary['seconds_graph']:.1f}",
                    f"{summary['peak_memory_bytes'] / 2**30:.2f}",
                    f"{sent / 1e6:.1f}",
                    f"{formula / 1e6:.1f}",
                    swapped,
                    widths=(10, 10, 11, 15, 13, 15),
                )
            )


if __name__ == "__main__":
    main()
