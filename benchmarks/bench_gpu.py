"""The GPU engine against torch and the GEMM roofline, and graph measures in edges per second.

    python benchmarks/bench_gpu.py [--shapes 100000x512 1000000x128] [--k 10] [--repeats 3]

kNN: for each (N, D), gpugraph at precision exact / tf32 / bf16 against torch mm+topk in
row blocks (float32, TF32 off), each the median of --repeats runs (the 1M case: of 1). The
roofline time is 2 N^2 D / peak, for the peak of the precision used: the card's data-sheet
dense peak where the card is known, and the cuBLAS peak measured in this run on an
8192^3 GEMM. gpugraph does half of that GEMM (the upper triangle); the ratio time/roofline
says how close the whole search comes to the cost of the full product.

Graph measures: the k-NN graph of the largest shape (N nodes, N k directed edges):
modularity cold (a fresh graph) and warm, triangles, labelled
motifs, in directed edges per second, with the CPU path on the same graph in this run.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from _common import environment, median_time, row

import gpugraph as gg
from gpugraph.knn.build import search
from gpugraph.knn.tiles import CudaSelector, RowBlocks

# dense (no sparsity) peak FLOP/s from NVIDIA's data sheets: fp32 (CUDA cores), tf32, bf16
DATASHEET = {
    "H100 80GB HBM3": (67e12, 494.7e12, 989.4e12),  # SXM5
    "H100 PCIe": (51e12, 378e12, 756e12),
    "H200": (67e12, 494.7e12, 989.4e12),
    "A100-SXM4-80GB": (19.5e12, 156e12, 312e12),
    "A100-SXM4-40GB": (19.5e12, 156e12, 312e12),
}


def torch_blocks(x: torch.Tensor, k: int, block: int):
    """The plain baseline: normalise, then mm + topk(k) per row block with self masked."""
    xn = x / x.norm(dim=1, keepdim=True)
    out_i = torch.empty((len(x), k), dtype=torch.int64, device=x.device)
    for r0 in range(0, len(xn), block):
        s = xn[r0 : r0 + block] @ xn.T  # (b, N)
        s[torch.arange(len(s)), torch.arange(r0, r0 + len(s))] = -2.0
        out_i[r0 : r0 + block] = torch.topk(s, k, dim=1).indices
    return out_i


def measured_peaks() -> tuple[float, float, float]:
    n = 8192
    a = torch.randn(n, n, device="cuda")
    peaks = []
    for dtype, tf32 in ((torch.float32, False), (torch.float32, True), (torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        m = a.to(dtype)
        peaks.append(2 * n**3 / median_time(partial(torch.matmul, m, m), 5))
    torch.backends.cuda.matmul.allow_tf32 = False
    return tuple(peaks)


def _indices(x: torch.Tensor, k: int, precision: str) -> torch.Tensor:
    return gg.knn_graph(x, k=k, precision=precision).indices


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows whose neighbour sets are equal."""
    return float((a.sort(1).values == b.sort(1).values).all(1).float().mean())


def knn_table(shapes, k: int, repeats: int, peaks: dict) -> gg.KnnGraph:
    print(f"\nexact cosine kNN, k={k}; roofline = 2 N^2 D / peak of the precision")
    print(
        row(
            "N x D / method",
            "time [s]",
            "torch / it",
            "roofline x",
            "(meas.) x",
            "agree",
            widths=(30, 10, 11, 11, 10, 8),
        )
    )
    graph = None
    for n, d in shapes:
        x = torch.randn(n, d, device="cuda", generator=torch.Generator("cuda").manual_seed(n))
        reps = 1 if n >= 500_000 else repeats
        ref = gg.knn_graph(x, k=k)
        block = max(256, (1 << 31) // (4 * n))  # a (block, N) float32 tile of at most 2 GiB
        t_torch = median_time(partial(torch_blocks, x, k, block), reps)
        runs = [
            ("gpugraph exact", partial(_indices, x, k, "exact"), "fp32"),
            ("gpugraph tf32", partial(_indices, x, k, "tf32"), "tf32"),
            ("gpugraph bf16", partial(_indices, x, k, "bf16"), "bf16"),
            ("gpugraph exact, strided T", partial(_strided, x, k), "fp32"),
        ]
        flops = 2 * n * n * d
        for name, fn, prec in runs:
            t = median_time(fn, reps)
            sheet = f"{t / (flops / peaks['sheet'][prec]):.2f}" if peaks["sheet"] else "-"
            print(
                row(
                    f"{n}x{d} {name}",
                    f"{t:.3f}",
                    f"{t_torch / t:.2f}",
                    sheet,
                    f"{t / (flops / peaks['measured'][prec]):.2f}",
                    f"{agreement(fn(), ref.indices):.4f}",
                    widths=(30, 10, 11, 11, 10, 8),
                )
            )
        print(
            row(
                f"{n}x{d} torch mm+topk",
                f"{t_torch:.3f}",
                "1.00",
                "-",
                "-",
                f"{agreement(torch_blocks(x, k, block), ref.indices):.4f}",
                widths=(30, 10, 11, 11, 10, 8),
            )
        )
        graph = ref
    return graph


def _strided(x: torch.Tensor, k: int) -> torch.Tensor:
    """The exact search with the column block reading the tile in place (strided)."""
    xn = x / x.norm(dim=1, keepdim=True)
    return search(RowBlocks(xn, x.device), k, 8192, "exact", CudaSelector(transpose_copy=False))[0]


def graph_table(g: gg.KnnGraph, repeats: int) -> None:
    n, k = g.indices.shape
    labels = torch.randint(0, 10, (n,), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    cpu_g, cpu_labels = g.to("cpu"), labels.cpu()
    edges = n * k
    print(f"\ngraph measures on the k-NN graph: N={n}, {edges} directed edges; edges/s (higher is better)")
    print(row("measure", "GPU [s]", "GPU edges/s", "CPU [s]", "GPU x", widths=(26, 10, 13, 10, 8)))

    def fresh(graph):
        return gg.KnnGraph(graph.indices, graph.weights, validate=False)

    cases = [
        ("modularity, cold", lambda gr, lab: gg.modularity(fresh(gr), lab)),
        ("modularity, warm", lambda gr, lab: gg.modularity(gr, lab)),
        ("triangles", lambda gr, lab: gg.triangles(gr)),
        ("motifs", lambda gr, lab: gg.motifs(gr, lab)),
    ]
    for name, fn in cases:
        gpu_value, cpu_value = fn(g, labels), fn(cpu_g, cpu_labels)
        same = (abs(gpu_value - cpu_value) < 1e-9) if isinstance(gpu_value, float) else gpu_value == cpu_value
        t_gpu = median_time(partial(fn, g, labels), repeats)
        t_cpu = median_time(partial(fn, cpu_g, cpu_labels), 1, warmup=0)
        print(
            row(
                name,
                f"{t_gpu:.4f}",
                f"{edges / t_gpu:.3g}",
                f"{t_cpu:.3f}",
                f"{t_cpu / t_gpu:.1f}",
                widths=(26, 10, 13, 10, 8),
            )
            + ("" if same else f"  MISMATCH {gpu_value} vs {cpu_value}")
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["100000x512", "1000000x128"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device; torch sees none")
    print(environment(), time.strftime("%Y-%m-%d"))
    name = torch.cuda.get_device_name()
    sheet = next((v for key, v in DATASHEET.items() if key in name), None)
    measured = measured_peaks()
    peaks = {
        "sheet": dict(zip(("fp32", "tf32", "bf16"), sheet, strict=True)) if sheet else None,
        "measured": dict(zip(("fp32", "tf32", "bf16"), measured, strict=True)),
    }
    print(
        "peak FLOP/s fp32 / tf32 / bf16: data sheet "
        + (" / ".join(f"{p / 1e12:.0f}T" for p in sheet) if sheet else "unknown for this card")
        + "; measured cuBLAS 8192^3 "
        + " / ".join(f"{p / 1e12:.0f}T" for p in measured)
    )
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    g = knn_table(shapes, args.k, args.repeats, peaks)
    graph_table(g, args.repeats)


if __name__ == "__main__":
    main()
