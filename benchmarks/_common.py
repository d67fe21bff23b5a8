"""Shared helpers for the benchmark scripts: timing, environment line, table rows."""

from __future__ import annotations

import platform
import statistics

import torch

from gpugraph._util import memory as _memory
from gpugraph.tools import bench


def median_time(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls: the timer of
    ``gpugraph bench`` (gpugraph.tools.bench.timings), so every script times things one way."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return statistics.median(bench.timings(fn, repeats, warmup, device))


def environment() -> str:
    import gpugraph

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return (
        f"gpugraph {gpugraph.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads, device: {device}"
    )


def row(*cells, widths=(28, 12, 12, 12, 10)) -> str:
    """One line of a table: each cell padded to its column's width (a row may leave the last
    columns empty, never have more cells than columns)."""
    if len(cells) > len(widths):
        raise ValueError(f"{len(cells)} cells for {len(widths)} columns: pass widths= for each")
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths[: len(cells)], strict=True))


def peak_rss_kib() -> int:
    """Peak resident memory of this process in KiB (VmHWM; unlike ru_maxrss it resets at exec)."""
    return _memory.peak_resident() // 1024


def correlation_ci(correlation, a, b, resamples: int = 2000, seed: int = 0):
    """``correlation(a, b)`` (a SciPy function such as spearmanr or kendalltau: its result
    with .statistic and .pvalue) and the 95% percentile bootstrap interval of its statistic
    over the points (resamples where a or b is constant are skipped)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        i = rng.integers(0, len(a), len(a))
        if len(np.unique(a[i])) > 1 and len(np.unique(b[i])) > 1:
            boot.append(correlation(a[i], b[i]).statistic)
    return correlation(a, b), np.percentile(boot, [2.5, 97.5])
