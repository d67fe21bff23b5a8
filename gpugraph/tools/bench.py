"""The benchmark runner: each case beside its reference in the same process, one JSON out,
and a comparison of two such files for performance regression tests.

    gpugraph bench [--suite quick|full] [--device cpu|cuda] [--json PATH]
    gpugraph bench compare BASELINE.json NEW.json [--factor 1.25] [--ignore-times]

A case times our side and its reference interleaved (A, B, A, B, ...) after a warm-up and
keeps the medians and the spread, so that drift of a shared machine hits both alike; it
records the peak memory of our side (the process's resident high-water mark, reset before
the call where Linux allows it) and deterministic counters (edges, triangles, tiles, ...)
that must not change between runs. ``compare`` checks ratios (speed-ups), never absolute
seconds, so a baseline taken on one machine still means something on a noisier one, and
calls a slow-down a regression only beyond the new run's noise (a distribution-free interval
over its rounds), "inconclusive" below that.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpugraph._util import memory as _memory

SUITES = ("quick", "full")
_SLACK = 16 * 2**20  # peak-memory growth below this is allocator noise, not a regression


@dataclass
class Case:
    """One benchmark: ``ours()`` and ``reference()`` do the same work; ``counters(result)``
    gives deterministic numbers from our result."""

    name: str
    ours: Callable[[], Any]
    reference: Callable[[], Any] | None
    reference_name: str
    counters: Callable[[Any], dict] | None = None
    notes: dict = field(default_factory=dict)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_once(fn, device: str = "cpu") -> float:
    """Wall seconds of one call of ``fn``, the device synchronised before and after: the one
    timer behind the runner and every script in benchmarks/."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def timings(fn, rounds: int, warmup: int = 1, device: str = "cpu") -> list[float]:
    """``rounds`` timings of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return [time_once(fn, device) for _ in range(rounds)]


def run_case(case: Case, rounds: int, device: str) -> dict:
    """Warm up both sides, then ``rounds`` interleaved timings; medians, spread, peak, counters."""
    result = case.ours()
    if case.reference is not None:
        case.reference()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _memory.reset_peak()
    result = case.ours()
    _sync(device)
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else (now - before if (now := _memory.peak_resident()) is not None and before is not None else None)
    )
    ours, ref = [], []
    for _ in range(rounds):  # interleaved: drift of a shared machine hits both sides alike
        ours.append(time_once(case.ours, device))
        if case.reference is not None:
            ref.append(time_once(case.reference, device))
    out = {
        "name": case.name,
        "seconds": statistics.median(ours),
        "seconds_min": min(ours),
        "seconds_max": max(ours),
        "times": ours,
        "reference": case.reference_name,
        "peak_bytes": peak,
        "rounds": rounds,
        "counters": case.counters(result) if case.counters else {},
        **case.notes,
    }
    if ref:
        out.update(
            {
                "reference_seconds": statistics.median(ref),
                "reference_seconds_min": min(ref),
                "reference_seconds_max": max(ref),
                "reference_times": ref,
                "speedup": statistics.median(ref) / statistics.median(ours),
            }
        )
    else:
        out.update({"reference_seconds": None, "speedup": None})
    return out


def cases(suite: str, device: str) -> list[Case]:
    """The cases of ``suite`` on ``device`` (data made here, seeded: the same every run)."""
    import gpugraph as gg
    from gpugraph.studies.curves import subsets

    quick = suite == "quick"
    dev = torch.device(device)
    rng = np.random.default_rng(0)

    def clustered(n, d, classes=10):
        labels = rng.integers(0, classes, n)
        centres = rng.normal(size=(classes, d))
        return torch.tensor(centres[labels] + 1.5 * rng.normal(size=(n, d)), dtype=torch.float32), labels

    out = []
    for n, d in ((8_000, 32), (3_000, 512)) if quick else ((50_000, 32), (20_000, 512)):
        x, _ = clustered(n, d)
        xd = x.to(dev)
        ref, ref_name = _knn_reference(x, 10, device)
        out.append(
            Case(
                f"knn_graph N={n} D={d} k=10",
                partial(gg.knn_graph, xd, k=10),
                ref,
                ref_name,
                lambda g: {
                    "edges": int(g.indices.numel()),
                    "self_loops": int((g.indices == torch.arange(g.n, device=g.device)[:, None]).sum()),
                },
            )
        )
    if device == "cuda":  # the GPU's own cases: screened tiles, exact neighbours
        n_gpu, d_gpu = (20_000, 256) if quick else (100_000, 512)
        x, _ = clustered(n_gpu, d_gpu)
        xd = x.to(dev)
        ref, ref_name = _knn_reference(x, 10, device)
        for precision in ("tf32", "bf16"):
            out.append(
                Case(
                    f"knn_graph N={n_gpu} D={d_gpu} k=10 {precision}",
                    partial(gg.knn_graph, xd, k=10, precision=precision),
                    ref,
                    ref_name,
                    lambda g: {"edges": int(g.indices.numel())},
                )
            )
    n = 20_000 if quick else 50_000
    x, labels = clustered(n, 16)
    g = gg.knn_graph(x.to(dev), k=10)
    ig, membership, weights, union = _igraph_views(g, labels)
    # cold: a graph as knn_graph returns it, nothing derived yet ("mean" modularity needs no reciprocity)
    out.append(
        Case(
            f"modularity N={n} k=10 cold",
            lambda: gg.modularity(gg.KnnGraph(g.indices, g.weights, validate=False), labels),
            (lambda: ig.modularity(membership, weights=weights)) if ig else None,
            "igraph Graph.modularity" if ig else "none",
            lambda q: {"modularity_1e6": round(q * 1e6)},
        )
    )
    out.append(
        Case(
            f"triangles N={n} k=10",
            lambda: gg.triangles(g),
            (lambda: union.list_triangles()) if union else None,
            "igraph list_triangles" if union else "none",
            lambda t: {"triangles": int(t)},
        )
    )
    out.append(Case(f"motifs N={n} k=10", lambda: gg.motifs(g, labels), None, "none", lambda m: dict(m)))
    # the paper's curve setting: 5 subsets of 500 samples, k = 3, on synthetic layers
    layers = {
        f"l{i}": (x[:, :16] * (i + 1) + torch.from_numpy(rng.normal(size=(n, 16)).astype(np.float32)) * (4 - i)).to(dev)
        for i in range(3 if quick else 6)
    }
    parts = subsets(n, 500, 5, 0)
    out.append(
        Case(
            "modularity_curve 5 x 500, k=3",
            lambda: gg.modularity_curve(layers, labels, k=3),
            lambda: [[_authors_modularity(v[p].cpu().numpy(), labels[p], 3) for v in layers.values()] for p in parts],
            "the authors' method (dense, heap, networkx)",
            lambda c: {"layers": len(c.layers), "mean_1e6": [round(v * 1e6) for v in c.mean]},
        )
    )
    m = 2_000 if quick else 5_000
    a, b = x[:m].to(dev), torch.tanh(x[:m, :12]).to(dev)
    out.append(
        Case(
            f"layer_similarity N={m}",
            lambda: gg.layer_similarity(a, b),
            lambda: _dense_lsim(a, b),
            "the N x N definition",
            lambda v: {"lsim_1e6": round(v * 1e6)},
        )
    )
    return out


def _knn_reference(x: torch.Tensor, k: int, device: str):
    if device == "cpu":
        try:
            import faiss

            xn = (x / x.norm(dim=1, keepdim=True)).numpy()

            def search():
                index = faiss.IndexFlatIP(xn.shape[1])
                index.add(xn)
                return index.search(xn, k + 1)

            return search, "faiss IndexFlatIP"
        except ImportError:
            pass
    xd = x.to(device)

    def blocks():
        xn = xd / xd.norm(dim=1, keepdim=True)
        for r0 in range(0, len(xn), 4096):
            s = xn[r0 : r0 + 4096] @ xn.T
            torch.topk(s, k + 1, dim=1)

    return blocks, "torch mm+topk in 4096-row blocks"


def _igraph_views(g, labels):
    try:
        import igraph
    except ImportError:
        return None, None, None, None
    coo = g.to_scipy("mean").tocoo()
    upper = coo.row < coo.col
    ig = igraph.Graph(n=g.n, edges=list(zip(coo.row[upper].tolist(), coo.col[upper].tolist(), strict=True)))
    union = g.to_scipy("max", weighted=False).tocoo()
    up = union.row < union.col
    ig_union = igraph.Graph(n=g.n, edges=list(zip(union.row[up].tolist(), union.col[up].tolist(), strict=True)))
    return ig, labels.tolist(), coo.data[upper].tolist(), ig_union


def _authors_modularity(x: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Lu et al.'s public code path: dense cosine matrix, a heap per row, networkx modularity."""
    import heapq

    import networkx as nx
    from networkx.algorithms.community import modularity

    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, 0.0)
    w = np.zeros_like(s)
    for i, row in enumerate(s):
        for j in heapq.nlargest(k, range(len(row)), key=row.__getitem__):
            w[i, j] = row[j]
    graph = nx.from_numpy_array((w + w.T) / 2)
    return modularity(graph, [set(np.flatnonzero(labels == c)) for c in np.unique(labels)], weight="weight")


def _dense_lsim(a: torch.Tensor, b: torch.Tensor) -> float:
    graphs = []
    for x in (a, b):
        u = x.double() / x.double().norm(dim=1, keepdim=True)
        s = u @ u.T
        s.fill_diagonal_(0.0)
        graphs.append(s)
    s1, s2 = graphs
    return float(((s1 * s2).sum(1) / (s1.norm(dim=1) * s2.norm(dim=1))).mean())


def machine(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> dict:
    import gpugraph

    out = {"gpugraph": gpugraph.__version__, "torch": torch.__version__, "numpy": np.__version__}
    for name in ("faiss", "igraph", "networkx", "scipy"):
        with contextlib.suppress(ImportError, AttributeError):
            out[name] = __import__(name).__version__
    return out


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _fixed_mmap_threshold() -> None:
    """Make glibc return every freed block over 64 KiB to the system (mallopt
    M_MMAP_THRESHOLD, which also stops its dynamic adjustment), so that the peaks measured
    follow live memory rather than how the heap happened to fragment: runs then agree to
    within a fraction of a MiB."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def run(
    suite: str = "quick", device: str = "cpu", rounds: int | None = None, log=print, only: list[str] | None = None
) -> dict:
    """Run ``suite`` (with ``only``: the cases whose first word, the measure, is one of those,
    such as "knn_graph" or "modularity") and return the JSON-ready result."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    _fixed_mmap_threshold()
    rounds = rounds or (5 if suite == "quick" else 7)
    chosen = cases(suite, device)
    if only:
        measures = sorted({c.name.split()[0] for c in chosen})
        unknown = [w for w in only if w not in measures]
        if unknown:
            raise ValueError(f"the {suite} suite has no case of {unknown}; its cases measure: {', '.join(measures)}")
        chosen = [c for c in chosen if c.name.split()[0] in only]
    results = []
    for case in chosen:
        results.append(run_case(case, rounds, device))
        r = results[-1]
        speed = f"{r['speedup']:.2f}x {r['reference']}" if r["speedup"] else "no reference"
        log(f"{r['name']:<34} {r['seconds']:8.4f} s  ({speed})")
    return {
        "suite": suite,
        "device": device,
        "machine": machine(device),
        "versions": versions(),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
        "cases": results,
    }


COVERAGE = 0.9  # of the speed-up intervals


def speedup_interval(case: dict) -> tuple[float, float] | None:
    """An interval holding the median of the case's per-round speed-ups (reference / ours
    of two calls timed one after the other) with probability at least 90%, whatever their
    distribution: the order statistics r_(j) <= r_(n+1-j) of the n rounds' ratios, with the
    largest j such that 1 - 2 P(Binomial(n, 1/2) < j) >= 0.9 (5 rounds: the smallest and the
    largest ratio, 93.75%). With fewer rounds, or a result without per-round times, the
    envelope (fastest reference / slowest ours, slowest reference / fastest ours), which
    holds every round's ratio. None without a reference."""
    ours, ref = case.get("times"), case.get("reference_times")
    if ours and ref and len(ours) == len(ref):
        ratios = sorted(r / o for r, o in zip(ref, ours, strict=True))
        n, j, below = len(ratios), 0, 0.0
        while 1 - 2 * (below + math.comb(n, j) / 2**n) >= COVERAGE:  # can the interval narrow by one?
            below += math.comb(n, j) / 2**n
            j += 1
        if j:
            return ratios[j - 1], ratios[n - j]
    lows = [case.get(key) for key in ("reference_seconds_min", "seconds_max", "reference_seconds_max", "seconds_min")]
    ref_fast, ours_slow, ref_slow, ours_fast = lows
    if ref_fast and ours_slow and ref_slow and ours_fast:
        return ref_fast / ours_slow, ref_slow / ours_fast
    return None


def compare(base: dict, new: dict, factor: float = 1.25, ignore_times: bool = False) -> tuple[list[str], bool]:
    """Lines of a case-by-case table and whether anything regressed.

    A case regresses when its speed-up is below the baseline's / ``factor`` beyond the noise
    of the new run, i.e. even the top of its 90% interval (:func:`speedup_interval`) is
    below it (unless ``ignore_times``); when only its median is below, the case is
    "inconclusive" (the machine too noisy to tell; not a failure). It also regresses when
    its peak memory grew above the baseline's * ``factor`` (+ 16 MiB of allocator noise),
    or a deterministic counter changed. Cases on one side only are listed, not failures.
    """
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    old = {c["name"]: c for c in base["cases"]}
    cur = {c["name"]: c for c in new["cases"]}
    lines = [f"{'case':<34} {'speedup base':>12} {'new [90% interval]':>24} {'peak base':>12} {'new':>12}  verdict"]
    failed, unsure = False, 0
    for name in list(old) + [n for n in cur if n not in old]:
        if name not in cur or name not in old:
            lines.append(f"{name:<34} {'only in ' + ('baseline' if name in old else 'new run'):>64}")
            continue
        a, b = old[name], cur[name]
        problems = []
        interval = speedup_interval(b)
        if not ignore_times and a.get("speedup") and b.get("speedup") and b["speedup"] < a["speedup"] / factor:
            if interval is None or interval[1] < a["speedup"] / factor:
                problems.append("slower")
            else:
                unsure += 1
                problems.append(
                    f"inconclusive (below {a['speedup'] / factor:.2f}x at the median, not beyond the noise)"
                )
        if (
            a.get("peak_bytes") is not None
            and b.get("peak_bytes") is not None
            and b["peak_bytes"] > a["peak_bytes"] * factor + _SLACK
        ):
            problems.append("more memory")
        changed = [k for k in a.get("counters", {}) if b.get("counters", {}).get(k) != a["counters"][k]]
        if changed:
            problems.append(
                "counters changed: " + ", ".join(f"{k} {a['counters'][k]} -> {b['counters'].get(k)}" for k in changed)
            )
        failed |= any(not p.startswith("inconclusive") for p in problems)

        def fmt(v, unit=""):
            return "-" if v is None else (f"{v:.2f}x" if unit == "x" else f"{v / 2**20:.1f} MiB")

        speed = fmt(b.get("speedup"), "x") + (f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else "")
        lines.append(
            f"{name:<34} {fmt(a.get('speedup'), 'x'):>12} {speed:>24} "
            f"{fmt(a.get('peak_bytes')):>12} {fmt(b.get('peak_bytes')):>12}  "
            + ("; ".join(problems) if problems else "ok")
        )
    if unsure:
        lines.append(
            f"{unsure} case(s) inconclusive: slower at the median, but within the run's noise; rerun "
            "on a quieter machine or with more --rounds to tell"
        )
    return lines, failed


def load(path) -> dict:
    data = json.loads(Path(path).read_text())
    if "cases" not in data:
        raise ValueError(f"{path} is not a gpugraph bench result (no 'cases')")
    return data
