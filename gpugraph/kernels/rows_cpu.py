"""Compiled CPU passes over the rows of a float32/float64 matrix (numba), for knn/rows.py.

- :func:`maxabs`: each row's largest |entry| (NaN for a row holding NaN).
- :func:`unit`: the same, and the rows divided by it and then by their norm, reading each
  row from memory once (the second and third sweeps find it in L1).
"""

from __future__ import annotations

import numba
import numpy as np

from gpugraph.kernels.threads import chunks_for, claim, parallel, span

# reassociation lets the row sums and maxima vectorise; no-NaN/no-Inf flags stay off, since
# finding NaN and Inf rows is part of the job
_FAST = {"reassoc", "nsz", "contract"}  # no arcp either: x / m, since 1 / m overflows for a subnormal m


@numba.njit(inline="always", fastmath=_FAST)
def _row_max(x, i):
    m = 0.0
    nan = False
    for j in range(x.shape[1]):
        v = abs(x[i, j])
        nan |= np.isnan(v)
        m = max(m, v)
    return np.nan if nan else m


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FAST)
def _maxabs(x, out, state, chunks, workers):
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, x.shape[0], c, chunks)
            for i in range(lo, hi):
                out[i] = _row_max(x, i)
            c = claim(state)


def maxabs(x: np.ndarray) -> np.ndarray:
    """(N,) largest |entry| of each row of the (N, D) array, in its dtype."""
    out = np.empty(x.shape[0], dtype=x.dtype)
    parallel(_maxabs, x, out, chunks=chunks_for(x.shape[0]), work=x.size)
    return out


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FAST)
def _unit(x, u, m, state, chunks, workers):
    n, d = x.shape
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, n, c, chunks)
            for i in range(lo, hi):
                mi = _row_max(x, i)
                m[i] = mi
                if not (0.0 < mi < np.inf):
                    continue
                ss = x.dtype.type(0.0)  # entries in [-1, 1], one of them +-1: no overflow or underflow
                for j in range(d):
                    v = x[i, j] / mi
                    u[i, j] = v
                    ss += v * v
                inv = x.dtype.type(1.0 / np.sqrt(np.float64(ss)))
                for j in range(d):
                    u[i, j] *= inv
            c = claim(state)


def unit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, m): m as :func:`maxabs`, u[i] = (x[i] / m[i]) / ||x[i] / m[i]|| for the rows with
    a finite nonzero m (the others are left unset: the caller refuses them)."""
    m = np.empty(x.shape[0], dtype=x.dtype)
    u = np.empty(x.shape, dtype=x.dtype)
    parallel(_unit, x, u, m, chunks=chunks_for(x.shape[0]), work=x.size)
    return u, m
