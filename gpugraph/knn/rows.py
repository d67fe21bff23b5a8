"""Rows of an (N, D) matrix checked and brought to unit length: the door of every cosine
measure. A row holding NaN or Inf, or (for a direction) all zeros, is refused here, by its
row number in the whole matrix; the layers below trust what comes out."""

from __future__ import annotations

import torch

_CHUNK = 1 << 22  # elements per chunk of a pass over rows: bounded temporaries


def _compiled(t: torch.Tensor) -> bool:
    """Whether the CPU's compiled row passes (gpugraph/kernels/rows_cpu.py) take ``t``."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.dim() == 2


def row_maxabs(t: torch.Tensor) -> torch.Tensor:
    """(N,) largest |entry| of each row, NaN for a row holding NaN, in float32 or float64."""
    if _compiled(t):
        from gpugraph.kernels import rows_cpu as _rows_cpu

        return torch.from_numpy(_rows_cpu.maxabs(t.detach().contiguous().numpy()))
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    out = torch.empty(t.shape[0], dtype=dtype, device=t.device)
    step = max(1, _CHUNK // max(1, t.shape[1]))
    for r0 in range(0, t.shape[0], step):
        out[r0 : r0 + step] = t[r0 : r0 + step].abs().amax(dim=1)  # NaN propagates
    return out


def check_rows(t: torch.Tensor, name: str = "x", *, nonzero: bool = True, offset: int = 0) -> torch.Tensor:
    """Refuse rows holding NaN or Inf (and all-zero rows when ``nonzero``), naming the first
    (as row ``offset + i`` when ``t`` is a block of a larger matrix).

    Returns the rows' largest |entry| (:func:`row_maxabs`) for reuse.
    """
    return _refuse_rows(row_maxabs(t), name, nonzero, offset)


def _refuse_rows(m: torch.Tensor, name: str, nonzero: bool, offset: int) -> torch.Tensor:
    """check_rows on the rows' largest |entry| ``m``."""
    bad = ~torch.isfinite(m)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        raise ValueError(
            f"{len(rows)} rows of {name} contain NaN or Inf (first: row {offset + int(rows[0])}); "
            "remove or repair them before building a graph"
        )
    if nonzero and bool((m == 0).any()):
        rows = (m == 0).nonzero().flatten()
        raise ValueError(
            f"{len(rows)} rows of {name} have zero norm (first: row {offset + int(rows[0])}); "
            "cosine similarity is undefined for them: drop those samples or add a small offset"
        )
    return m


def unit_rows(x: torch.Tensor, name: str = "x", offset: int = 0, refuse: bool = True) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm, in float64 for float64 input, float32 otherwise.

    Each row is first divided by its largest |entry|, so that its norm can neither overflow
    (rows near 1e20 in float32) nor underflow (rows near 1e-23): every finite row with a
    nonzero entry has a unit direction, and only all-zero rows are refused. ``refuse=False``
    for rows already checked at the door (:meth:`Source.check <gpugraph.knn.sources.Source.check>`).
    """
    if _compiled(x):  # one pass over memory
        from gpugraph.kernels import rows_cpu as _rows_cpu

        rows, largest = _rows_cpu.unit(x.detach().contiguous().numpy())
        if refuse:
            _refuse_rows(torch.from_numpy(largest), name, True, offset)
        return torch.from_numpy(rows)
    m = check_rows(x, name, nonzero=True, offset=offset) if refuse else row_maxabs(x)
    u = x.to(m.dtype, copy=True)
    u /= m[:, None]  # entries in [-1, 1], one of them +-1
    u /= torch.linalg.vector_norm(u, dim=1)[:, None]  # norms in [1, sqrt(D)]
    return u.contiguous()
