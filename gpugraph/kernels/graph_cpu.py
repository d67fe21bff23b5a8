"""Compiled CPU passes over a graph's edges (numba; the host twins of graph.cu).

Every pass but :func:`partners` reads the edges as CSR rows: ``indptr`` (N+1,) and
``cols`` (E,), node i's edges at indptr[i]..indptr[i+1]. A KnnGraph's (N, k) lists are
such rows (indptr = 0, k, 2k, ...), where a column -1 is an empty slot and is skipped; a
Graph's CSR is read as it is. One implementation of each algorithm serves both.

- :func:`partners`: for each directed edge i -> j of kNN lists, whether j lists i, and that weight.
- :func:`oriented_csr`: the undirected graph with each edge pointing from the lower to the
  higher (degree, index) rank, as CSR with sorted rows.
- :func:`count`: triangles of that oriented graph by sorted-row intersection, with per-node
  counts and labelled motifs in the same pass.
- :func:`modularity_sums`: the total mass, the within-class mass and the classes' out- and
  in-strengths in one pass; :func:`mean_sums` the same for "mean" mode from the directed
  weights alone (no reverse edges needed).
- :func:`list_faults`: where user-built lists break the graph's rules.
- :func:`fingerprint`: a hash of the lists' bits, so that a cache sees any edit.
"""

from __future__ import annotations

import numba
import numpy as np

from gpugraph.kernels.threads import CHUNKS, chunks_for, claim, parallel, span, threads


@numba.njit(parallel=True, nogil=True, cache=True)
def _partners(indices, weights, r0, r1, recip, partner_w, state, chunks, workers):
    k = indices.shape[1]
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(r0, r1, c, chunks)
            for i in range(lo, hi):
                for a in range(k):
                    j = indices[i, a]
                    if j < 0:
                        continue
                    for b in range(k):
                        if indices[j, b] == i:
                            recip[i - r0, a] = True
                            partner_w[i - r0, a] = weights[j, b]
                            break
            c = claim(state)


def partners(indices: np.ndarray, weights: np.ndarray, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """(recip (r1 - r0, k) bool, partner_w (r1 - r0, k)) for the edges of rows r0..r1 of
    the (N, k) lists: O(k^2) a row."""
    k = indices.shape[1]
    recip = np.zeros((r1 - r0, k), dtype=np.bool_)
    partner_w = np.zeros((r1 - r0, k), dtype=weights.dtype)
    parallel(_partners, indices, weights, r0, r1, recip, partner_w, chunks=chunks_for(r1 - r0), work=(r1 - r0) * k * k)
    return recip, partner_w


@numba.njit(inline="always")
def _lower(degree, i, j) -> bool:
    return degree[i] < degree[j] or (degree[i] == degree[j] and i < j)


@numba.njit(inline="always")
def _kept(recip, e, i, j) -> bool:
    """Whether edge e = i -> j stands for its undirected edge: each once, a one-way edge, or
    one listed both ways from its lower end; an empty slot (j = -1) never."""
    return j >= 0 and (not recip[e] or i < j)


@numba.njit(nogil=True, cache=True)
def oriented_csr(rows, cols, recip):
    """The undirected graph of the CSR edges (rows (N+1,), cols (E,); ``recip[e]``: whether
    edge e's reverse is listed too) oriented by (degree, index) rank: (indptr (N+1,), cols
    (m,)) with each row sorted. An edge listed both ways is kept once."""
    n = rows.shape[0] - 1
    degree = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for e in range(rows[i], rows[i + 1]):
            j = cols[e]
            if _kept(recip, e, i, j):
                degree[i] += 1
                degree[j] += 1
    count = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for e in range(rows[i], rows[i + 1]):
            j = cols[e]
            if _kept(recip, e, i, j):
                u = i if _lower(degree, i, j) else j
                count[u + 1] += 1
    indptr = np.cumsum(count)
    out = np.empty(indptr[n], dtype=np.int64)
    fill = indptr[:-1].copy()
    for i in range(n):
        for e in range(rows[i], rows[i + 1]):
            j = cols[e]
            if _kept(recip, e, i, j):
                u, v = (i, j) if _lower(degree, i, j) else (j, i)
                out[fill[u]] = v
                fill[u] += 1
    for u in range(n):
        _sort_short(out[indptr[u] : indptr[u + 1]])
    return indptr, out


@numba.njit(inline="always")
def _sort_short(a) -> None:
    """Sort ``a`` in place: by insertion when it is short (a kNN graph's rows: numba's sort
    costs more to set up than to run there), else by numba's sort."""
    if a.shape[0] > 32:
        a.sort()
        return
    for m in range(1, a.shape[0]):
        v = a[m]
        p = m
        while p > 0 and a[p - 1] > v:
            a[p] = a[p - 1]
            p -= 1
        a[p] = v


@numba.njit(inline="always")
def _lower_in(rows, i, j) -> bool:
    """:func:`_lower` with the degrees of a symmetric CSR: its row lengths."""
    di, dj = rows[i + 1] - rows[i], rows[j + 1] - rows[j]
    return di < dj or (di == dj and i < j)


@numba.njit(parallel=True, nogil=True, cache=True)
def _kept_counts(rows, cols, count, state, chunks, workers):
    """count[i + 1]: how many of row i's neighbours rank above i."""
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, rows.shape[0] - 1, c, chunks)
            for i in range(lo, hi):
                kept = 0
                for e in range(rows[i], rows[i + 1]):
                    kept += _lower_in(rows, i, cols[e])
                count[i + 1] = kept
            c = claim(state)


@numba.njit(parallel=True, nogil=True, cache=True)
def _kept_rows(rows, cols, indptr, out, state, chunks, workers):
    """Row i's neighbours of higher rank, in order, at out[indptr[i]:]."""
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, rows.shape[0] - 1, c, chunks)
            for i in range(lo, hi):
                f = indptr[i]
                for e in range(rows[i], rows[i + 1]):
                    if _lower_in(rows, i, cols[e]):
                        out[f] = cols[e]
                        f += 1
            c = claim(state)


def oriented_symmetric_csr(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`oriented_csr` of a symmetric CSR with sorted rows (every edge in both rows, as
    a Graph holds it): each row keeps the neighbours of higher rank, already in order; in
    parallel over the rows, no sort."""
    n = rows.shape[0] - 1
    chunks = chunks_for(n)
    count = np.zeros(n + 1, dtype=np.int64)
    parallel(_kept_counts, rows, cols, count, chunks=chunks, work=len(cols))
    indptr = np.cumsum(count)
    out = np.empty(indptr[n], dtype=np.int64)
    parallel(_kept_rows, rows, cols, indptr, out, chunks=chunks, work=len(cols))
    return indptr, out


@numba.njit(parallel=True, nogil=True, cache=True)
def _count(indptr, cols, labels, per_node, motifs, r0, r1, totals, nodes, kinds, state, chunks, workers):
    for w in numba.prange(workers):  # one claiming loop a thread; w: its row of the integer accumulators
        c = claim(state)
        while c < chunks:
            lo, hi = span(r0, r1, c, chunks)
            for u in range(lo, hi):
                a0, a1 = indptr[u], indptr[u + 1]
                for e in range(a0, a1):
                    v = cols[e]
                    # sorted intersection of u's row and v's row (rows are sorted by index)
                    p, q, q1 = a0, indptr[v], indptr[v + 1]
                    while p < a1 and q < q1:
                        if cols[p] < cols[q]:
                            p += 1
                        elif cols[p] > cols[q]:
                            q += 1
                        else:
                            x = cols[p]
                            totals[w] += 1
                            if per_node:
                                nodes[w, u] += 1
                                nodes[w, v] += 1
                                nodes[w, x] += 1
                            if motifs:
                                lu, lv, lx = labels[u], labels[v], labels[x]
                                if lu == lv and lv == lx:
                                    kinds[w, 0] += 1
                                elif lu != lv and lv != lx and lu != lx:
                                    kinds[w, 2] += 1
                                else:
                                    kinds[w, 1] += 1
                            p += 1
                            q += 1
            c = claim(state)


def count(indptr, cols, labels, per_node: bool, motifs: bool, r0: int, r1: int, chunks: int = CHUNKS, work=None):
    """Triangles found at the edges leaving rows r0..r1 of an oriented CSR graph (each
    triangle u -> v -> w closed by u -> w is found once, at its lowest-ranked node u), the
    rows split in ``chunks``; ``work`` (element steps) sets the threads.

    Returns (total, per-node counts (N,) or empty, [same, pair, distinct] counts)."""
    n = indptr.shape[0] - 1
    workers = threads(work)
    totals = np.zeros(workers, dtype=np.int64)
    kinds = np.zeros((workers, 3), dtype=np.int64)
    nodes = np.zeros((workers, n if per_node else 0), dtype=np.int64)
    parallel(
        _count,
        indptr,
        cols,
        labels,
        per_node,
        motifs,
        r0,
        r1,
        totals,
        nodes,
        kinds,
        chunks=max(1, min(chunks, r1 - r0)),
        work=work,
    )
    return int(totals.sum()), nodes.sum(axis=0), kinds.sum(axis=0)


MODES = {"mean": 0, "max": 1, "mutual": 2, "as is": 3}  # "as is": a Graph's own adjacency


@numba.njit(inline="always")
def symmetric(w, pw, recip, mode, weighted):
    """(fwd, rev) of one directed edge: graph.symmetric_from for one entry (its statement of
    the three modes, compiled); "as is" carries the edge's own weight."""
    if not weighted:
        w = pw = 1.0
    if mode == 3:
        return w, 0.0
    if mode == 2:  # mutual
        return ((w + pw) / 2, 0.0) if recip else (0.0, 0.0)
    if mode == 0 and weighted:  # mean
        return ((w + pw) / 2, 0.0) if recip else (w / 2, w / 2)
    return (max(w, pw), 0.0) if recip else (w, w)  # max, and unweighted mean


_SUM_CHUNKS = 16  # the float64 sums' chunks: one (2, classes + _LINE) array of strengths each
_LINE = 8  # float64s of padding after each chunk's strengths: threads on neighbouring chunks
# write to no common cache line (the sums write a class strength at every edge)


@numba.njit(parallel=True, nogil=True, cache=True)
def _modularity_sums(
    rows, cols, weights, recip, partner_w, codes, mode, weighted, clip, directed, strength, sums, state, chunks, workers
):
    n = rows.shape[0] - 1
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            total = within = 0.0
            lowest = np.inf
            lo, hi = span(0, n, c, chunks)
            s_out, s_in = strength[c, 0], strength[c, 1]
            for i in range(lo, hi):
                ci = codes[i]
                out = inn = 0.0  # what row i adds to its own class's strengths, added once
                e0, e1 = rows[i], rows[i + 1]
                # the row's edges as views indexed from 0: numba knows no index is negative
                row_cols, row_w, row_recip, row_pw = cols[e0:e1], weights[e0:e1], recip[e0:e1], partner_w[e0:e1]
                for e in range(e1 - e0):
                    j = row_cols[e]
                    if j < 0:
                        continue
                    w, pw = np.float64(row_w[e]), np.float64(row_pw[e])
                    lowest = min(lowest, w)
                    if clip:  # the directed weights, before they are symmetrised
                        w, pw = max(w, 0.0), max(pw, 0.0)
                    fwd, rev = symmetric(w, pw, row_recip[e], mode, weighted)  # A_ij, and A_ji of a one-way edge
                    cj = codes[np.uint64(j)]
                    out += fwd
                    s_out[cj] += rev
                    if directed:
                        s_in[cj] += fwd
                        inn += rev
                    total += fwd + rev
                    if cj == ci:
                        within += fwd + rev
                s_out[ci] += out
                if directed:
                    s_in[ci] += inn
            sums[c, 0], sums[c, 1], sums[c, 2] = total, within, lowest
            c = claim(state)


def modularity_sums(rows, cols, weights, recip, partner_w, codes, classes: int, mode: int, weighted, clip, directed):
    """(total mass sum_ij A_ij, the mass over same-class ordered pairs, (classes,) out- and
    in-strengths of the classes, the lowest directed weight) of the CSR edges (rows (N+1,),
    cols (E,), -1 skipped) symmetrised by ``mode`` ("as is": each edge i -> j is A_ij), in
    float64; ``clip`` sets negative directed weights to 0 before they are symmetrised. For
    an undirected graph (not ``directed``) the out- and in-strengths are the classes'
    strengths, summed once and returned twice. The rows are summed in a fixed number of
    chunks, and the chunks in order: the result does not depend on the thread count."""
    args = (rows, cols, weights, recip, partner_w, codes, mode, weighted, clip, directed)
    total, within, strength, lowest = _chunked_sums(_modularity_sums, args, classes, work=len(cols))
    return total, within, strength[0], strength[1] if directed else strength[0], lowest


def _chunked_sums(kernel, args: tuple, classes: int, work: int):
    """Run the sums pass ``kernel(*args, strength, sums, ...)`` over :data:`_SUM_CHUNKS`
    chunks, each with a (2, classes) array of strengths (padded by :data:`_LINE`) and its
    (total, within, lowest); the totals, the (2, classes) strengths and the lowest weight,
    the chunks added in order (so whatever the thread count)."""
    strength = np.zeros((_SUM_CHUNKS, 2, classes + _LINE), dtype=np.float64)
    sums = np.zeros((_SUM_CHUNKS, 3), dtype=np.float64)  # total, within, lowest
    sums[:, 2] = np.inf
    parallel(kernel, *args, strength, sums, chunks=_SUM_CHUNKS, work=work)
    class_strength = np.zeros((2, classes), dtype=np.float64)
    total = within = 0.0
    for c in range(_SUM_CHUNKS):
        class_strength += strength[c, :, :classes]
        total += sums[c, 0]
        within += sums[c, 1]
    return total, within, class_strength, sums[:, 2].min()


@numba.njit(parallel=True, nogil=True, cache=True)
def _mean_sums(rows, cols, weights, codes, clip, strength, sums, state, chunks, workers):
    n = rows.shape[0] - 1
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            total = within = 0.0
            lowest = np.inf
            lo, hi = span(0, n, c, chunks)
            banks = strength[c]
            for i in range(lo, hi):
                ci = codes[i]
                out = same = 0.0  # W's row sum, and its part inside class ci
                e0, e1 = rows[i], rows[i + 1]
                row_cols, row_w = cols[e0:e1], weights[e0:e1]  # views from 0: no wrap-around checks
                for e in range(e1 - e0):
                    j = row_cols[e]
                    w = np.float64(row_w[e]) if j >= 0 else 0.0  # an empty slot adds 0
                    lowest = min(lowest, w if j >= 0 else np.inf)
                    if clip:
                        w = max(w, 0.0)
                    cj = codes[np.uint64(max(j, 0))]
                    out += w
                    same += w if cj == ci else 0.0
                    # no branch on the class (kNN edges cross classes at random), and two
                    # banks, so that edges of one class in a row do not wait on each other
                    banks[e & 1, cj] += w
                banks[0, ci] += out
                total += out
                within += same
            sums[c, 0], sums[c, 1], sums[c, 2] = total, within, lowest
            c = claim(state)


def mean_sums(rows, cols, weights, codes, classes: int, clip):
    """:func:`modularity_sums` of kNN lists in "mean" mode, weighted, without their reverse
    edges: A = (W + W^T) / 2 for the directed weights W gives sum_ij A_ij = sum_ij W_ij, the
    same-class mass sum_ij W_ij [c_i = c_j], and class c's strength
    (sum_{i in c} sum_j W_ij + sum_{j in c} sum_i W_ij) / 2, all sums of W's entries. One
    pass over the edges, in float64, in the same fixed chunks."""
    args = (rows, cols, weights, codes, clip)
    total, within, banks, lowest = _chunked_sums(_mean_sums, args, classes, work=len(cols))
    strength = (banks[0] + banks[1]) / 2  # the two banks hold twice the strengths
    return total, within, strength, strength, lowest


@numba.njit(parallel=True, nogil=True, cache=True)
def _list_faults(indices, first, state, chunks, workers):
    n, k = indices.shape
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            lo, hi = span(0, n, c, chunks)
            for i in range(lo, hi):
                for a in range(k):
                    j = indices[i, a]
                    if (j < -1 or j >= n) and first[c, 0] == n:
                        first[c, 0] = i
                    if j == i and first[c, 1] == n:
                        first[c, 1] = i
                    for b in range(a):
                        if j >= 0 and indices[i, b] == j and first[c, 2] == n:
                            first[c, 2] = i
            c = claim(state)


def list_faults(indices: np.ndarray) -> np.ndarray:
    """The first row of the (N, k) lists with an index outside [0, N) other than -1 (an
    empty slot), with itself as a neighbour, and with a repeated neighbour: three ints, -1
    where there is none."""
    n, k = indices.shape
    first = np.full((chunks_for(n), 3), n, dtype=np.int64)
    parallel(_list_faults, indices, first, chunks=first.shape[0], work=n * k * k)
    low = first.min(axis=0)
    return np.where(low < n, low, -1)


_LANES = 64  # permutations one pass over the edges serves: a cache line of uint8 codes


@numba.njit(parallel=True, nogil=True, cache=True)
def _permuted_sums(rows, cols, both, s_out, s_in, codes, within, class_out, class_in, state, chunks, workers):
    n = rows.shape[0] - 1
    count = codes.shape[1]
    for _ in numba.prange(workers):  # one claiming loop a thread
        b = claim(state)
        while b < chunks:
            p0 = b * _LANES
            lanes = min(_LANES, count - p0)
            acc = np.zeros(_LANES, dtype=np.float64)
            co, cn = class_out[p0 : p0 + lanes], class_in[p0 : p0 + lanes]
            for i in range(n):
                ci = codes[i, p0 : p0 + lanes]
                for t in range(lanes):
                    co[t, ci[t]] += s_out[i]
                    cn[t, ci[t]] += s_in[i]
                for e in range(rows[i], rows[i + 1]):
                    j = cols[e]
                    if j < 0:
                        continue
                    cj = codes[j, p0 : p0 + lanes]
                    w = both[e]
                    for t in range(lanes):
                        acc[t] += w if ci[t] == cj[t] else 0.0
            within[p0 : p0 + lanes] = acc[:lanes]
            b = claim(state)


def permuted_sums(rows, cols, both, s_out, s_in, codes: np.ndarray, classes: int):
    """For each labelling p (column p of ``codes``, (N, P)): sum of ``both`` over the CSR
    edges (rows, cols; -1 skipped) whose ends share a label, and the (classes,) out- and
    in-strength of each label from the nodes' ``s_out`` and ``s_in``. (P,), (P, classes)
    twice, float64. Each pass over the edges serves _LANES labellings (one per lane, a chunk
    of the work); every sum is taken in edge order, so the result does not depend on the
    thread count."""
    count = codes.shape[1]
    within = np.zeros(count, dtype=np.float64)
    class_out = np.zeros((count, classes), dtype=np.float64)
    class_in = np.zeros((count, classes), dtype=np.float64)
    args = (rows, cols, both, s_out, s_in, codes, within, class_out, class_in)
    parallel(_permuted_sums, *args, chunks=(count + _LANES - 1) // _LANES, work=len(cols) * count)
    return within, class_out, class_in


@numba.njit(inline="always")
def _mix(z):
    """splitmix64's finaliser: every input bit moves every output bit (uint64 wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _hash_chunk(words, seed, c, chunks):
    """The sum of mix(word ^ (position * golden + seed)) over chunk c of ``chunks`` of the words."""
    part = np.uint64(0)
    lo, hi = span(0, words.shape[0], c, chunks)
    chunk = words[lo:hi]  # a loop from 0: numba knows no index is negative, and vectorises it (3x)
    for t in range(hi - lo):
        part += _mix(np.uint64(chunk[t]) ^ (np.uint64(lo + t) * np.uint64(0x9E3779B97F4A7C15) + seed))
    return part


@numba.njit(parallel=True, nogil=True, cache=True)
def _hash(a, b, parts, state, chunks, workers):
    """parts[c]: the hash of chunk c of ``chunks`` // 2 of a's words, then of b's."""
    half = chunks // 2
    for _ in numba.prange(workers):  # one claiming loop a thread
        c = claim(state)
        while c < chunks:
            if c < half:
                parts[c] = _hash_chunk(a, np.uint64(0x9E3779B97F4A7C15), c, half)
            else:
                parts[c] = _hash_chunk(b, np.uint64(0x3C6EF372FE94F82A), c - half, half)
            c = claim(state)


def _words(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view({8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}[a.itemsize])


def fingerprint(a: np.ndarray, b: np.ndarray) -> int:
    """A 64-bit hash of the bits of two NumPy arrays (C-contiguous, 1 to 8 bytes an entry; a
    graph's indices and weights): for each array the sum over its words of
    mix(word ^ (position * golden + the array's seed)), in one parallel pass over chunks of
    both. Any edit of the bits changes it except with probability about 2^-64."""
    wa, wb = _words(a), _words(b)
    parts = np.zeros(2 * CHUNKS, dtype=np.uint64)
    parallel(_hash, wa, wb, parts, chunks=2 * CHUNKS, work=len(wa) + len(wb))
    return int(parts.sum(dtype=np.uint64))
