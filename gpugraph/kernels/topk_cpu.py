"""The compiled CPU selector: one pass over a similarity tile feeds the running top-k of its
rows and of its columns (numba, compiled on first use and cached on disk).

The tile is read once, row by row, in parallel over chunks of rows. Each entry is compared
with its row's and its column's current k-th value (vectorised, 32 entries at a time); the
rare entry that passes replaces the worst of the list, and the threshold rises at once. A
row whose list is not yet full (its first tile) starts from a floor the tile itself gives
(:func:`_tile_floor`), so its list does not take every rising entry on the way.
Rows belong to one chunk, so their lists are updated in place; columns are shared by every
chunk, so each chunk collects its column candidates in lists of its own, merged into the
columns' lists after the pass. "Better" is value descending, then index ascending: the tie
rule of every gpugraph path.

During a search a list of k is a binary heap with its worst entry last: heap node j is
list position k - 1 - j, so the k-th value sits where a sorted list keeps it, a sorted list
is already such a heap (the other selectors' output), and an insertion costs log2(k)
steps instead of a sorted list's k / 2 shifts (the difference at k = 256). :func:`sort_rows`
orders the lists once, at the end.

Every entry within ``margin`` (the tile's error bound) of a threshold is re-scored from the
unit rows by :func:`cosine` before it is inserted, so the lists hold one value per pair
whatever tile, precision or rank computed it; ``margin`` = 0 takes the tile's values as they
are (the kernels' tests).
"""

from __future__ import annotations

import numba
import numpy as np

from gpugraph.kernels.threads import chunks_for, claim, parallel, span, threads

_CHUNK = 32  # entries compared at once before any branch
# fast-math for the scan's reductions (vectorised max), but never "ninf": the empty slots
# of the lists and the thresholds before a row has k candidates are -inf
_FASTMATH = {"nnan", "nsz", "reassoc", "arcp", "contract", "afn"}


@numba.njit(inline="always")
def _better(v, i, tv, ti) -> bool:
    return v > tv or (v == tv and i < ti)


@numba.njit(inline="always")
def _insert(vals, idx, v, i) -> None:
    """Replace the worst entry of the heap (vals, idx) (its last position) by (v, i), known
    to beat it, and sift (v, i) towards the front until both its children are worse."""
    k = vals.shape[0]
    j = 0  # heap node j is position k - 1 - j; its children are nodes 2j + 1 and 2j + 2
    while True:
        c = 2 * j + 1
        if c >= k:
            break
        if c + 1 < k and _better(vals[k - 1 - c], idx[k - 1 - c], vals[k - 2 - c], idx[k - 2 - c]):
            c += 1  # the worse child moves up
        if not _better(v, i, vals[k - 1 - c], idx[k - 1 - c]):
            break
        vals[k - 1 - j] = vals[k - 1 - c]
        idx[k - 1 - j] = idx[k - 1 - c]
        j = c
    vals[k - 1 - j] = v
    idx[k - 1 - j] = i


SCALE = 2.0**61  # the canonical dot product's grid: products are summed as multiples of 2^-61


# The canonical similarity is compiled without fast-math, and says so explicitly: numba
# compiles a callee with its caller's flags unless told (and _select is fast-math).
@numba.njit(nogil=True, cache=True, fastmath=False)
def fixed_dot(a, b):
    """a.b of two (D,) unit rows as an exact int64 multiple of 2^-61: each product a_t b_t
    (exact in float64 for float32 rows) is rounded to the nearest multiple of 2^-61 (ties to
    even) and the integers are summed, exactly and so in any order (|sum| <= |a||b| 2^61 <
    2^63). The same integer in gpugraph/knn/tiles.py (torch) and kernels/topk.cu (CUDA)."""
    acc = np.int64(0)
    for t in range(a.shape[0]):
        acc += np.int64(np.rint(np.float64(a[t]) * np.float64(b[t]) * SCALE))
    return acc


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _fixed_norms(x, out, state, chunks, workers):
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, x.shape[0], c, chunks)
            for i in range(lo, hi):
                out[i] = fixed_dot(x[i], x[i])
            c = claim(state)


def fixed_norms(x: np.ndarray) -> np.ndarray:
    """(N,) int64 :func:`fixed_dot` of each row of the (N, D) array with itself."""
    out = np.empty(x.shape[0], dtype=np.int64)
    parallel(_fixed_norms, x, out, chunks=chunks_for(x.shape[0]), work=x.size)
    return out


@numba.njit(nogil=True, cache=True, fastmath=False)
def _cosine(a, b, aa, bb):
    """:func:`cosine` with the rows' :func:`fixed_norms` given."""
    c = np.float64(fixed_dot(a, b)) / np.sqrt(np.float64(aa) * np.float64(bb))
    return a.dtype.type(min(1.0, max(-1.0, c)))


@numba.njit(nogil=True, cache=True, fastmath=False)
def cosine(a, b):
    """The canonical similarity of unit rows a and b, (D,) float32 or float64:
    ab / sqrt(aa bb) in float64 from the :func:`fixed_dot` integers ab = a.b, aa = a.a,
    bb = b.b, clamped to [-1, 1] and rounded to a's dtype. Identical rows give 1 exactly
    (sqrt(s s) = s in IEEE arithmetic)."""
    return _cosine(a, b, fixed_dot(a, a), fixed_dot(b, b))


@numba.njit(inline="always", fastmath=_FASTMATH)
def _tile_floor(srow, own, margin, maxima, best):
    """A value no entry of the row's top-k can be screened below: the k-th largest of the
    maxima of the row's chunks of :data:`_CHUNK` entries (``own``, the row's pair with
    itself, left out), less twice the margin; -inf for fewer chunks than k (k = len(best)).
    Those k maxima are k distinct entries, so the row's k-th value is at least theirs less
    one margin, and an entry screened below the floor is at least one margin under that."""
    tb, k = srow.shape[0], best.shape[0]
    inf = srow.dtype.type(np.inf)  # in the tile's dtype, so the maxima stay in it
    groups = (tb + _CHUNK - 1) // _CHUNK
    if groups < k:
        return -inf
    for g in range(groups):
        q0, q1 = g * _CHUNK, min(g * _CHUNK + _CHUNK, tb)
        top = -inf
        part = srow[q0:q1]  # a view indexed from 0: vectorised
        for q in range(q1 - q0):
            top = max(top, part[q])
        if q0 <= own < q1:  # this chunk holds the row's own pair: its maximum without it
            top = -inf
            for q in range(q0, q1):
                if q != own:
                    top = max(top, srow[q])
        maxima[g] = top
    best[:] = -inf  # the k largest maxima, descending
    for g in range(groups):
        v = maxima[g]
        if v > best[k - 1]:
            p = k - 1
            while p > 0 and best[p - 1] < v:
                best[p] = best[p - 1]
                p -= 1
            best[p] = v
    return best[k - 1] - 2 * margin


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=_FASTMATH)
def _select(
    s,
    row_v,
    row_i,
    row_id0,
    col_v,
    col_i,
    col_id0,
    margin,
    columns,
    xa,
    xb,
    na,
    nb,
    local_v,
    local_i,
    state,
    chunks,
    workers,
):
    """Offer tile ``s`` (ta, tb) to the lists of its rows (row_v/row_i: (ta, k)) and, with
    ``columns``, of its columns (col_v/col_i: (tb, k)). Entry (p, q) pairs global ids
    row_id0 + p and col_id0 + q; a pair of equal ids (the diagonal) is skipped.
    xa, xb: the tile's unit rows, na, nb their fixed_norms (read when margin > 0).
    local_v/local_i: (chunks, tb, k) workspace for the column candidates of each chunk of rows,
    offered to the columns' lists after the pass (in chunks of columns; ``state``: two counters)."""
    ta, tb = s.shape
    k = row_v.shape[1]
    inf = s.dtype.type(np.inf)  # in the tile's dtype: a float64 -inf would widen the scan's maxima
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            p0, p1 = span(0, ta, c, chunks)
            lv, li = local_v[c], local_i[c]
            cut = np.empty(tb, dtype=s.dtype)  # this chunk's column thresholds, margin subtracted
            pick = np.empty(_CHUNK, dtype=np.int64)
            maxima = np.empty((tb + _CHUNK - 1) // _CHUNK, dtype=s.dtype)
            best = np.empty(k, dtype=s.dtype)
            if columns:
                for q in range(tb):
                    lv[q, :] = -inf
                    li[q, :] = -1
                    cut[q] = col_v[q, k - 1] - margin
            for p in range(p0, p1):
                srow = s[p]
                rv, ri = row_v[p], row_i[p]
                gi = row_id0 + p
                floor = -inf
                if rv[k - 1] == -inf:  # a row's first tile: the tile's own k-th value bounds the row's
                    floor = _tile_floor(srow, gi - col_id0, margin, maxima, best)
                tr = max(rv[k - 1] - margin, floor)
                for q0 in range(0, tb, _CHUNK):
                    q1 = min(q0 + _CHUNK, tb)
                    top = -inf  # the largest excess over a threshold in the chunk
                    part = srow[q0:q1]  # a view indexed from 0: no wrap-around checks, vectorised
                    if columns:
                        part_cut = cut[q0:q1]
                        for q in range(q1 - q0):
                            top = max(top, max(part[q] - tr, part[q] - part_cut[q]))
                    else:
                        for q in range(q1 - q0):
                            top = max(top, part[q] - tr)
                    if top < 0:
                        continue
                    found = 0  # the chunk's entries over a threshold, gathered without a branch
                    for q in range(q0, q1):
                        pick[found] = q
                        found += (srow[q] >= tr) | (srow[q] >= cut[q]) if columns else srow[q] >= tr
                    for t in range(found):
                        q = pick[t]
                        v = srow[q]
                        to_row = v >= tr
                        to_col = columns and v >= cut[q]
                        gj = col_id0 + q
                        if not (to_row or to_col) or gi == gj:
                            continue
                        e = v if margin == 0 else _cosine(xa[p], xb[q], na[p], nb[q])
                        if to_row and _better(e, gj, rv[k - 1], ri[k - 1]):
                            _insert(rv, ri, e, gj)
                            tr = max(rv[k - 1] - margin, floor)
                        if (
                            to_col
                            and _better(e, gi, col_v[q, k - 1], col_i[q, k - 1])
                            and _better(e, gi, lv[q, k - 1], li[q, k - 1])
                        ):
                            _insert(lv[q], li[q], e, gi)
                            cut[q] = max(col_v[q, k - 1], lv[q, k - 1]) - margin
            c = claim(state)
    if columns:
        for _ in numba.prange(workers):
            r = claim(state[1:])
            while r < chunks:
                lo, hi = span(0, tb, r, chunks)
                for q in range(lo, hi):
                    _merge_column(col_v[q], col_i[q], local_v[:, q], local_i[:, q])
                r = claim(state[1:])


@numba.njit(inline="always")
def _merge_column(gv, gi, local_v, local_i) -> None:
    """Offer every row chunk's candidates for one column (local_v/local_i: (chunks, k)) to the
    column's list (gv, gi)."""
    k = gv.shape[0]
    for c in range(local_v.shape[0]):
        lv, li = local_v[c], local_i[c]
        for m in range(k):
            if li[m] >= 0 and _better(lv[m], li[m], gv[k - 1], gi[k - 1]):
                _insert(gv, gi, lv[m], li[m])


@numba.njit(parallel=True, nogil=True, cache=True)
def _sort_rows(vals, idx, state, chunks, workers) -> None:
    n, k = vals.shape
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, n, c, chunks)
            for p in range(lo, hi):
                hv, hi = vals[p].copy(), idx[p].copy()  # the heap, popped worst first into the row's end
                for m in range(k - 1, -1, -1):  # the heap's m + 1 nodes are hv[k - 1 - m:]
                    vals[p, m], idx[p, m] = hv[k - 1], hi[k - 1]
                    if m:  # its last node (position k - 1 - m) takes the root's place in the m left
                        _insert(hv[k - m :], hi[k - m :], hv[k - 1 - m], hi[k - 1 - m])
            c = claim(state)


def sort_rows(values, indices) -> None:
    """Order each row's heap (see the module's note) best first, in place (NumPy arrays)."""
    chunks = chunks_for(values.shape[0])
    parallel(_sort_rows, values, indices, chunks=chunks, work=values.size * max(1, values.shape[1].bit_length()))


class Workspace:
    """The column candidates' lists of each chunk, kept across the tiles of one search."""

    def __init__(self, k: int, dtype):
        self.k, self.dtype, self.chunks = k, np.dtype(dtype), threads()
        self.values = np.empty((self.chunks, 0, k), dtype=self.dtype)
        self.indices = np.empty((self.chunks, 0, k), dtype=np.int64)

    def select(
        self,
        s,
        row_v,
        row_i,
        row_id0: int,
        col_v=None,
        col_i=None,
        col_id0: int = 0,
        margin: float = 0.0,
        xa=None,
        xb=None,
    ) -> None:
        """Offer tile ``s`` (a C-contiguous NumPy array) to its rows and, when ``col_v`` is
        given, to its columns; all arrays are NumPy views of the running lists. A margin
        > 0 re-scores every kept entry from the unit rows ``xa`` and ``xb``."""
        columns = col_v is not None
        tb = s.shape[1]
        if columns and self.values.shape[1] < tb:
            self.values = np.empty((self.chunks, tb, self.k), dtype=self.dtype)
            self.indices = np.empty((self.chunks, tb, self.k), dtype=np.int64)
        if not columns:
            col_v, col_i = row_v[:0], row_i[:0]
        if xa is None:
            xa = xb = s[:0]
        na, nb = fixed_norms(xa), fixed_norms(xb)
        chunks = max(1, min(self.chunks, s.shape[0]))
        parallel(
            _select,
            s,
            row_v,
            row_i,
            row_id0,
            col_v,
            col_i,
            col_id0,
            s.dtype.type(margin),
            columns,
            xa,
            xb,
            na,
            nb,
            self.values[:chunks, :tb],
            self.indices[:chunks, :tb],
            chunks=chunks,
            work=s.size,
            counters=2,
        )
