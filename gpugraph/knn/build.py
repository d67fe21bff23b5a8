"""Exact cosine k-nearest-neighbour graphs: the public entry point, its checks, and the
device, memory and selector policy. The tile walk and the selectors are in _tiles.py.

The similarity matrix S = X X^T of the unit rows is symmetric, so the tiles of its upper
triangle are computed once each and every off-diagonal tile feeds the running top-k of both
its row block and its column block: half the GEMM work of a plain blocked search.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import torch

from gpugraph._util import memory as _memory
from gpugraph._util import progress as _progress
from gpugraph._util.convert import resolve_device
from gpugraph._util.memory import parse_memory
from gpugraph._util.types import Device, Memory, PathLike, Progress, RowSource
from gpugraph.graph.knngraph import KnnGraph
from gpugraph.kernels import cuda as _kernels
from gpugraph.knn.checkpoint import Checkpoint
from gpugraph.knn.sources import Source, as_source
from gpugraph.knn.tiles import (
    CompiledSelector,
    CudaSelector,
    RowBlocks,
    TopK,
    TorchSelector,
    _best_first,
    tiles,
    walk,
)

__all__ = ["KnnGraph", "knn_graph"]

_PRECISIONS = ("exact", "bf16", "tf32")


def knn_graph(
    x: RowSource,
    k: int = 10,
    *,
    precision: str = "exact",
    tile: int | None = None,
    device: Device = None,
    progress: Progress = None,
    memory: Memory = None,
    checkpoint: PathLike | None = None,
) -> KnnGraph:
    """Exact cosine k-nearest-neighbour graph over the rows of ``x``.

    Row i of the result lists the k rows most similar to row i by cosine similarity
    ``cos(x_i, x_j) = x_i . x_j / (|x_i| |x_j|)``, in decreasing order of similarity, never i
    itself. Exact duplicates of row i are other nodes and are listed with weight exactly 1.
    Ties are broken towards the lower index, so the result is deterministic.

    The similarity of a pair is one value whatever computed it: the canonical cosine of the
    unit rows (float32 for float16/bfloat16/float32 input, float64 for float64), a.b /
    sqrt(a.a b.b) in float64 from sums taken exactly as integers (each product rounded to a
    multiple of 2^-61, so no summation order changes them), clamped to [-1, 1] and rounded
    to that dtype. The GEMM tiles only select candidates: each pair within the GEMM's
    rounding bound of a list's k-th value is re-scored. So the neighbours, the weights and
    the ties are the same bits for every tile, precision, device selector and world size.
    For float64 input the weights are then rounded to float32, and entries whose float32
    weights are equal are listed by index.

    Parameters
    ----------
    x : (N, D) floating-point matrix: a torch tensor, NumPy or CuPy array in memory, or out
        of core: a path to an .npy file, a NumPy memmap (``np.load(path, mmap_mode="r")``), a
        zarr array
        One sample per row. float16/bfloat16/float32 are computed in float32, float64 in
        float64. An out-of-core X is read a block of rows at a time for both sides of each
        tile (upcast block by block), so memory stays O(N k + tiles), never O(N D).
    k : int
        Neighbours per node, 1 <= k < N.
    precision : {"exact", "bf16", "tf32"}
        Arithmetic of the similarity tiles. Every choice returns the same graph, bit for
        bit (the canonical value above): "exact" computes the tiles in IEEE arithmetic of
        the compute dtype, whatever torch's matmul precision settings say (TF32 on CUDA,
        bf16 in oneDNN on the CPU), and leaves those settings as it found them; "bf16" (and
        "tf32", CUDA only) computes them in low precision only to screen candidates, keeping
        every entry within a proven rounding bound of the running threshold, and re-scores
        the kept pairs. Screening pays where low-precision GEMM is much faster (GPU tensor
        cores); on the CPU "exact" is usually faster.
    tile : int, optional
        Rows per tile. By default chosen from ``memory`` (at most 2048 on the CPU, 8192 on
        CUDA).
    memory : int or str, optional
        Bytes the tiles may take, e.g. ``"2GB"`` or ``"512MiB"``. Default: an eighth of the
        memory free on the compute device.
    device : torch.device or str, optional
        Where to compute; the result lives there. Default: x's device. A host ``x`` with
        ``device="cuda"`` is copied to the GPU when it fits in half the free GPU memory,
        and otherwise streamed to it tile by tile from pinned host memory.
    progress : bool or callable, optional
        A bar over the tiles: None shows it only for long builds (N >= 20 000) when stderr
        is a terminal; a callable is called as ``progress(tiles_done, tiles)`` after each
        tile, e.g. to log or to estimate the time left.
    checkpoint : str or path, optional
        A file (.npz) where the search saves its running lists, every minute and when it is
        interrupted (Ctrl-C ends it after the tile being computed, saved). A search of the
        same matrix and k with this checkpoint resumes from it and returns the same graph, bit
        for bit, as an uninterrupted one; the file is deleted when the graph is complete. A
        checkpoint of another matrix (told by its shape, dtype and 64 sampled rows), k or
        tile is refused, never used.

    Returns
    -------
    KnnGraph
        ``indices`` (N, k) int64 and ``weights`` (N, k) float32 on the compute device.

    Raises
    ------
    TypeError
        If x is not a floating-point array, or k is not an integer.
    ValueError
        If x is not 2-D, holds NaN or Inf, has zero-norm rows, k is out of range, or the
        precision or device is unknown, or the precision unavailable on the device.
    GpuGraphError
        If a CUDA device is asked for but torch sees none, or CuPy (the kernels) is missing.
    KeyboardInterrupt
        On Ctrl-C; with ``checkpoint`` after saving the search so far.

    Notes
    -----
    Time O(N^2 D / 2) for the GEMM plus O(N^2 / 2) comparisons; memory O(N k + tile^2):
    the N x N matrix is never held. Each tile is read once by a selector that keeps a
    running k-th threshold per row and per column: on the CPU compiled code (numba,
    gpugraph/kernels/topk_cpu.py), on CUDA (float32, k <= 256) a CuPy kernel
    (gpugraph/kernels/topk.cu), elsewhere torch code.

    Screening bounds, for unit vectors of dimension D, on ``|s_low - s|``: bf16 rounds both
    inputs (unit roundoff u = 2^-8, moving each product by at most ``(2u + u^2) |a_i b_i|``,
    and ``sum |a_i b_i| <= 1``), accumulates in float32 (at most D 2^-24) and rounds the
    result (u): e = 3.01 u + D 2^-23. TF32 keeps 10 mantissa bits (u = 2^-10 even if the
    hardware truncates) with float32 accumulation and output: e = 2.01 u + D 2^-23. An
    entry is kept if s_low >= (row's current k-th exact similarity) - e, which holds for
    every entry that can enter the top k. Diagonal tiles are always exact, and a screened
    tile that would keep more than 64 candidates per row is recomputed exactly. Every tile
    adds (2 D + 16) u to the margin (u = 2^-24, or 2^-53 for float64): the bound on the
    distance between an exact GEMM value and the canonical cosine (gpugraph.knn.tiles.pair_error).
    Re-scoring costs O(D) for each candidate that enters a list, about
    k (1 + ln(N / k)) per row: 0-10% of the GEMM at k = 10, more at large k and small D
    (benchmarks/RESULTS.md).

    Examples
    --------
    >>> import torch, gpugraph as gg
    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> gg.knn_graph(x, k=1).indices.flatten().tolist()
    [1, 0, 3, 2]
    """
    src = as_source(x)
    check_k(k, src.n)
    target = resolve_device(device, src.device)
    _check_precision(precision, target)
    _check_tile(tile)
    saved = Checkpoint(checkpoint, src, k) if checkpoint is not None else None
    return build(
        src,
        k,
        precision=precision,
        tile=tile,
        device=target,
        budget=parse_memory(memory),
        progress=progress,
        checkpoint=saved,
    )


def build(
    src: Source,
    k: int,
    *,
    precision: str = "exact",
    tile: int | None = None,
    device: torch.device | None = None,
    budget: int | None = None,
    progress=None,
    checkpoint: Checkpoint | None = None,
) -> KnnGraph:
    """:func:`knn_graph` below its door: ``src`` is a Source (its rows checked now, as they
    are normalised, unless ``src.checked``), and k, precision, tile, device and budget are
    valid; the studies that check their layers themselves call this."""
    n, d = src.shape
    target = device if device is not None else src.device
    rows = RowBlocks.of(src, target)
    default = _default_tile(target, rows.dtype, k, budget, n, d) if tile is None else tile
    tile = checkpoint.tile_for(tile, default) if checkpoint is not None else default
    selector, precision_used = _selector(target, rows.dtype, k, precision)
    bar = _progress.bar(progress, len(tiles(n, None, tile, k)), "tile", "knn_graph", long=n >= 20_000)
    indices, weights = search(rows, k, tile, precision_used, selector, bar, checkpoint)
    bar.close()
    meta = {
        "metric": "cosine",
        "n": n,
        "d": d,
        "k": k,
        "dtype": str(src.dtype).replace("torch.", ""),
        "precision": precision,
    }
    return KnnGraph(indices, weights, validate=False, meta=meta)


def search(
    rows: RowBlocks,
    k: int,
    tile: int,
    precision: str,
    selector,
    bar=_progress.SILENT,
    checkpoint: Checkpoint | None = None,
):
    """(indices, float32 weights) of the k-NN of the unit rows: the upper tiles of X X^T,
    walked once (the tiles a checkpoint holds skipped, its lists taken instead)."""
    top = TopK(rows.n, k, rows.dtype, rows.device)
    start, after = 0, None
    guard: contextlib.AbstractContextManager = contextlib.nullcontext()
    if checkpoint is not None:
        checkpoint.tile, checkpoint.total = tile, len(tiles(rows.n, None, tile, k))
        start, guard = checkpoint.restore(top), checkpoint.guard(top)

        def after(done: int) -> None:
            checkpoint.after(top, done)

    with guard:
        walk(selector, top, rows, 0, tile=tile, precision=precision, bar=bar, start=start, after=after)
    if checkpoint is not None:
        checkpoint.finish()
    top.sort()
    return as_float32_lists(top.values, top.indices)


def as_float32_lists(values: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists sorted best first in float64 as float32 weights: values that become equal in
    float32 are put in index order, so that the tie rule holds for the weights returned."""
    if values.dtype == torch.float32:
        return indices, values
    values = values.to(torch.float32)
    if bool((values[:, 1:] == values[:, :-1]).any()):
        values, indices = _best_first(values, indices, values.shape[1])
    return indices, values


def _selector(device: torch.device, dtype: torch.dtype, k: int, precision: str):
    """The selector for the device, and the precision it can screen in: the compiled pass on
    the CPU, the CuPy kernel on CUDA (float32, k <= 256), torch elsewhere (no TF32 screen)."""
    if device.type == "cpu":
        return CompiledSelector(k, dtype), precision
    if dtype == torch.float32 and k <= _kernels.MAX_K:
        return CudaSelector(), precision
    why = f"k={k} > {_kernels.MAX_K}" if k > _kernels.MAX_K else f"{dtype} rows"
    warnings.warn(
        f"knn_graph: the CUDA selection kernel takes float32 rows and k <= {_kernels.MAX_K}; "
        f"with {why} the slower torch selection runs instead"
        + ("; precision='tf32' has no screen there, so the tiles are computed exactly" if precision == "tf32" else ""),
        stacklevel=3,
    )
    return TorchSelector(), "exact" if precision == "tf32" else precision


def _check_tile(tile) -> None:
    if tile is None:
        return
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise TypeError(f"tile must be a positive integer (rows per tile) or None, got {tile!r}")
    if tile < 1:
        raise ValueError(f"tile must be a positive integer (rows per tile) or None, got {tile}")


def check_k(k, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < N (a node has N - 1 others), got k={k} with N={n}")


def _check_precision(precision, device: torch.device) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(
            "precision='tf32' needs a CUDA device (TF32 is a GPU tensor-core format); on the CPU use 'bf16' or 'exact'"
        )


def _default_tile(
    device: torch.device, dtype: torch.dtype, k: int, budget: int | None = None, n: int | None = None, d: int = 0
) -> int:
    """Rows per tile so that the live temporaries of one tile fit the memory budget (default:
    the shared one): the tile and its transposed copy or a second mask (2 x size bytes an
    entry) and two boolean masks, and the rows of the tile's two blocks with the temporaries
    of reading and normalising one (4 x D x size bytes a row); GEMM-friendly caps. On the CPU
    ``n`` rows are split into at least two row blocks (from 256 rows), so that the walk skips
    the lower tile: 3/4 of the GEMM: 1.1-1.3x faster from 300 x 1280 to 2000 x 512 (measured
    2026-11-24)."""
    size = torch.tensor([], dtype=dtype).element_size()
    cap = 8192 if device.type == "cuda" else 2048  # CPU: a float32 tile stays in a 32 MB L3 cache
    if device.type == "cpu" and n is not None and n >= 256:
        cap = min(cap, -(-n // 2))
    per_entry, per_row = 2 * size + 2, 4 * d * size
    if budget is None and per_entry * cap * cap + per_row * cap <= _SMALL_TILE:  # no need to ask the OS
        return max(2 * (k + 1), cap)
    room = budget or _memory.budget(device)
    side = int((-per_row + math.sqrt(per_row * per_row + 4 * per_entry * room)) / (2 * per_entry))
    return max(2 * (k + 1), min(cap, side))


_SMALL_TILE = 64 << 20  # bytes of tile temporaries taken without looking at free memory
