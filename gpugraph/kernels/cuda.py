"""CuPy custom kernels: the sources in gpugraph/kernels/*.cu, compiled on first use, cached per device.

This module is the only place that reads, compiles or launches the CUDA sources. Tensors
cross into CuPy with ``cupy.from_dlpack`` (no copy) and every launch goes on torch's
current stream of the tensors' device, so kernels order correctly with torch's own work.
Inputs are checked here (device, dtype, contiguity) with errors that say what to pass.
"""

from __future__ import annotations

import functools
import importlib.resources

import numpy as np
import torch

from gpugraph._util.errors import GpuGraphError

THREADS = 256  # threads per block of every launch
SORT_CAP = 2048  # topk.cu: entries merged at once in shared memory (a power of two)
MAX_K = 256  # largest k the selection kernel takes; larger k uses the torch path
_OPTIONS = ("--std=c++17", f"-DTHREADS={THREADS}", f"-DSORT_CAP={SORT_CAP}", f"-DMAX_K={MAX_K}")
KERNELS = {  # every kernel launched, by source: tests check these against what NVRTC and nvcc build
    "topk.cu": ("topk_merge",),
    "graph.cu": ("edge_partners_f32", "edge_partners_f64", "triangle_count"),
}


def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise GpuGraphError(
            "CUDA tensors use gpugraph's CuPy kernels, but CuPy is not installed; "
            'pip install "gpugraph[gpu]" (CUDA 13) or "gpugraph[gpu-cuda12]" (CUDA 12)'
        ) from exc
    return cupy


def source(name: str) -> str:
    """The text of gpugraph/kernels/<name> as shipped in the package."""
    return importlib.resources.files("gpugraph.kernels").joinpath(name).read_text()


@functools.cache
def _module(name: str, device_index: int):
    cupy = _cupy()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=source(name), options=_OPTIONS)


def _function(name: str, kernel: str, device: torch.device):
    return _module(name, device.index if device.index is not None else torch.cuda.current_device()).get_function(kernel)


def _launch(device: torch.device, name: str, kernel: str, blocks: int, args: tuple) -> None:
    if kernel not in KERNELS.get(name, ()):
        raise GpuGraphError(f"no kernel {kernel!r} in gpugraph/kernels/{name} (KERNELS lists {KERNELS.get(name)})")
    if blocks == 0:
        return
    cupy = _cupy()
    fn = _function(name, kernel, device)
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
        fn((blocks,), (THREADS,), args)


def _arg(t: torch.Tensor):
    """A CuPy view of a CUDA tensor, no copy."""
    return _cupy().from_dlpack(t.detach())


def _check(name: str, t: object, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor, got one on {t.device}; move it with .cuda()")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous; call .contiguous() first")


def topk_merge(
    tile: torch.Tensor,
    row0: int,
    col0: int,
    best_v: torch.Tensor,
    best_i: torch.Tensor,
    *,
    transpose: bool = False,
    margin: float = 0.0,
    row_id0: int | None = None,
    xr: torch.Tensor | None = None,
    xc: torch.Tensor | None = None,
    nr: torch.Tensor | None = None,
    nc: torch.Tensor | None = None,
) -> None:
    """Merge a similarity tile into the running top-k of its rows, in place (topk.cu).

    Without ``transpose``, tile entry (p, q) is the similarity of the row whose running
    state is row row0 + p of best_v/best_i and the column with global id col0 + q, and is
    offered to that row; with it, the tile is read as its transpose: (p, q) is offered to
    row row0 + q as column col0 + p. ``row_id0``: the global id of the first row (default
    row0); a pair of equal ids is skipped. ``margin > 0`` marks a tile computed in low
    precision with that error bound, or one whose candidates must be re-scored: candidates
    within the margin of a row's k-th value are re-scored by the canonical cosine from the
    unit rows ``xr`` (of the rows offered to) and ``xc`` (of the columns) and their int64
    norms ``nr`` and ``nc`` (gpugraph.knn.tiles.fixed_norms).
    """
    device = best_v.device
    n, k = best_v.shape
    row_id0 = row0 if row_id0 is None else row_id0
    if best_i.shape != best_v.shape:
        raise ValueError(f"best_i must have best_v's shape {tuple(best_v.shape)}, got {tuple(best_i.shape)}")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"the selection kernel takes 1 <= k <= {MAX_K}, got k={k}")
    rows, cols = (tile.shape[1], tile.shape[0]) if transpose else tile.shape
    row_stride, col_stride = (1, tile.shape[1]) if transpose else (tile.shape[1], 1)
    if row0 < 0 or row0 + rows > n:
        raise ValueError(f"tile rows {row0}..{row0 + rows} fall outside the {n} rows of best_v")
    if min(col0, row_id0) < 0 or max(col0 + cols, row_id0 + rows) >= 2**31 - 1:
        raise ValueError(
            f"the selection kernel indexes rows with int32: ids {row_id0}..{row_id0 + rows} and "
            f"{col0}..{col0 + cols} must lie in 0..2^31 - 2"
        )
    if margin > 0:
        if xr is None or xc is None or nr is None or nc is None:
            raise ValueError(
                "a tile with margin > 0 needs the unit rows xr and xc and their norms nr and nc to re-score candidates"
            )
        if xr.shape[0] != rows or xc.shape[0] != cols or xr.shape[1] != xc.shape[1]:
            raise ValueError(f"xr must be ({rows}, D) and xc ({cols}, D), got {tuple(xr.shape)} and {tuple(xc.shape)}")
        if nr.shape != (rows,) or nc.shape != (cols,):
            raise ValueError(f"nr must be ({rows},) and nc ({cols},), got {tuple(nr.shape)} and {tuple(nc.shape)}")
        _check("xr", xr, torch.float32, device)
        _check("xc", xc, torch.float32, device)
        _check("nr", nr, torch.int64, device)
        _check("nc", nc, torch.int64, device)
        d = xr.shape[1]
    else:
        xr = xc = tile  # never read
        nr = nc = best_i
        d = 0
    _check("tile", tile, torch.float32, device)
    _check("best_v", best_v, torch.float32, device)
    _check("best_i", best_i, torch.int64, device)
    _launch(
        device,
        "topk.cu",
        "topk_merge",
        rows,
        (
            _arg(tile),
            np.int64(row_stride),
            np.int64(col_stride),
            np.int32(rows),
            np.int32(cols),
            np.int64(row0),
            np.int64(row_id0),
            np.int64(col0),
            _arg(best_v),
            _arg(best_i),
            np.int32(k),
            np.float32(margin),
            _arg(xr),
            _arg(xc),
            _arg(nr),
            _arg(nc),
            np.int32(d),
        ),
    )


def edge_partners(indices: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every directed edge i -> indices[i, a]: whether it is reciprocated, and the weight
    of the reverse edge (graph.cu). Returns (N, k) bool and (N, k) weights.dtype tensors."""
    device = indices.device
    if weights.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"weights must be float32 or float64, got {weights.dtype}")
    _check("indices", indices, torch.int64, device)
    _check("weights", weights, weights.dtype, device)
    n, k = indices.shape
    recip = torch.empty((n, k), dtype=torch.uint8, device=device)
    partner_w = torch.empty_like(weights)
    kernel = "edge_partners_f32" if weights.dtype == torch.float32 else "edge_partners_f64"
    _launch(
        device,
        "graph.cu",
        kernel,
        -(-n * k // THREADS),
        (
            _arg(indices),
            _arg(weights),
            np.int64(n),
            np.int32(k),
            _arg(recip),
            _arg(partner_w),
        ),
    )
    return recip.bool(), partner_w


def triangle_count(
    indptr: torch.Tensor, cols: torch.Tensor, labels: torch.Tensor | None = None, per_node: bool = False
) -> tuple[int, torch.Tensor | None, list[int] | None]:
    """Triangles of a degree-oriented DAG in CSR form with sorted rows (graph.cu).

    Returns (total, per-node counts as an (N,) int64 tensor or None, [same, pair, distinct]
    motif counts when ``labels`` (N,) int64 class codes are given, else None).
    """
    device = indptr.device
    _check("indptr", indptr, torch.int64, device)
    _check("cols", cols, torch.int64, device)
    n = indptr.numel() - 1
    m = cols.numel()
    src = torch.repeat_interleave(torch.arange(n, device=device), indptr.diff())  # (m,)
    counters = torch.zeros(4, dtype=torch.int64, device=device)  # total, same, pair, distinct
    nodes = torch.zeros(n, dtype=torch.int64, device=device) if per_node else None
    if labels is not None:
        _check("labels", labels, torch.int64, device)
    placeholder = counters  # a valid pointer for the arrays a launch does not read
    _launch(
        device,
        "graph.cu",
        "triangle_count",
        -(-m // THREADS),
        (
            _arg(indptr),
            _arg(cols),
            _arg(src),
            np.int64(m),
            _arg(labels if labels is not None else placeholder),
            _arg(counters[:1]),
            _arg(nodes if nodes is not None else placeholder),
            _arg(counters[1:]),
            np.int32(per_node),
            np.int32(labels is not None),
        ),
    )
    total, *motif = counters.tolist()
    return total, nodes, motif if labels is not None else None
