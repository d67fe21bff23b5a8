"""Compiled CPU passes over a kNN graph's edge lists (numba; the host twins of graph.cu).

- :func:`partners`: for each directed edge i -> j, whether j lists i, and that weight.
- :func:`oriented_csr`: the union graph with each edge pointing from the lower to the
  higher (degree, index) rank, as CSR with sorted rows.
- :func:`count`: triangles of that oriented graph by sorted-row intersection, with per-node
  counts and labelled motifs in the same pass.
- :func:`modularity_sums`: 2m, the within-class mass and the class strengths in one pass.
- :func:`list_faults`: where user-built lists break the graph's rules.
- :func:`fingerprint`: a hash of the lists' bits, so that a cache sees any edit.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, nogil=True, cache=True)
def partners(indices, weights, r0, r1):
    """(recip (r1 - r0, k) bool, partner_w (r1 - r0, k)) for the edges of rows r0..r1 of
    the (N, k) lists: O(k^2) a row."""
    k = indices.shape[1]
    recip = np.zeros((r1 - r0, k), dtype=np.bool_)
    partner_w = np.zeros((r1 - r0, k), dtype=weights.dtype)
    for r in numba.prange(r1 - r0):
        i = r0 + r
        for a in range(k):
            j = indices[i, a]
            if j < 0:
                continue
            for b in range(k):
                if indices[j, b] == i:
                    recip[r, a] = True
                    partner_w[r, a] = weights[j, b]
                    break
    return recip, partner_w


@numba.njit(inline="always")
def _lower(degree, i, j) -> bool:
    return degree[i] < degree[j] or (degree[i] == degree[j] and i < j)


@numba.njit(inline="always")
def _kept(recip, i, a, j) -> bool:
    """Whether edge i -> j (slot a of i's list) stands for its undirected edge: each once, a
    one-way edge, or a mutual one from its lower end."""
    return j >= 0 and (not recip[i, a] or i < j)


@numba.njit(nogil=True, cache=True)
def oriented_csr(indices, recip):
    """The union graph of the (N, k) lists oriented by (degree, index) rank: (indptr (N+1,),
    cols (m,)) with each row sorted. An edge listed both ways is kept once."""
    n, k = indices.shape
    degree = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for a in range(k):
            j = indices[i, a]
            if _kept(recip, i, a, j):
                degree[i] += 1
                degree[j] += 1
    count = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for a in range(k):
            j = indices[i, a]
            if _kept(recip, i, a, j):
                u = i if _lower(degree, i, j) else j
                count[u + 1] += 1
    indptr = np.cumsum(count)
    cols = np.empty(indptr[n], dtype=np.int64)
    fill = indptr[:-1].copy()
    for i in range(n):
        for a in range(k):
            j = indices[i, a]
            if _kept(recip, i, a, j):
                u, v = (i, j) if _lower(degree, i, j) else (j, i)
                cols[fill[u]] = v
                fill[u] += 1
    for u in range(n):
        cols[indptr[u] : indptr[u + 1]].sort()
    return indptr, cols


@numba.njit(parallel=True, nogil=True, cache=True)
def count(indptr, cols, labels, per_node, motifs, r0, r1, chunks):
    """Triangles found at the edges leaving rows r0..r1 of an oriented CSR graph (each
    triangle u -> v -> w closed by u -> w is found once, at its lowest-ranked node u).

    Returns (total, per-node counts (N,) or empty, [same, pair, distinct] counts)."""
    n = indptr.shape[0] - 1
    totals = np.zeros(chunks, dtype=np.int64)
    kinds = np.zeros((chunks, 3), dtype=np.int64)
    nodes = np.zeros((chunks, n if per_node else 0), dtype=np.int64)
    for c in numba.prange(chunks):
        for u in range(r0 + c * (r1 - r0) // chunks, r0 + (c + 1) * (r1 - r0) // chunks):
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
                        w = cols[p]
                        totals[c] += 1
                        if per_node:
                            nodes[c, u] += 1
                            nodes[c, v] += 1
                            nodes[c, w] += 1
                        if motifs:
                            lu, lv, lw = labels[u], labels[v], labels[w]
                            if lu == lv and lv == lw:
                                kinds[c, 0] += 1
                            elif lu != lv and lv != lw and lu != lw:
                                kinds[c, 2] += 1
                            else:
                                kinds[c, 1] += 1
                        p += 1
                        q += 1
    per = np.zeros(n if per_node else 0, dtype=np.int64)
    for c in range(chunks):
        per += nodes[c]
    return totals.sum(), per, kinds.sum(axis=0)


MODES = {"mean": 0, "max": 1, "mutual": 2}


@numba.njit(inline="always")
def symmetric(w, pw, recip, mode, weighted):
    """(fwd, rev) of one directed edge: graph.symmetric_from for one entry (its statement of
    the three modes, compiled)."""
    if not weighted:
        w = pw = 1.0
    if mode == 2:  # mutual
        return ((w + pw) / 2, 0.0) if recip else (0.0, 0.0)
    if mode == 0 and weighted:  # mean
        return ((w + pw) / 2, 0.0) if recip else (w / 2, w / 2)
    return (max(w, pw), 0.0) if recip else (w, w)  # max, and unweighted mean


_CHUNKS = 16  # rows split in a fixed number of chunks: float64 sums do not depend on the thread count


@numba.njit(parallel=True, nogil=True, cache=True)
def modularity_sums(indices, weights, recip, partner_w, codes, classes, mode, weighted, clip):
    """(2m, sum of A_ij over same-class ordered pairs, (classes,) class strengths, the lowest
    directed weight) of the symmetrised graph, in float64; ``clip`` sets negative directed
    weights to 0 before they are symmetrised."""
    n, k = indices.shape
    strength = np.zeros((_CHUNKS, classes), dtype=np.float64)
    sums = np.zeros((_CHUNKS, 3), dtype=np.float64)  # 2m, within, lowest
    for c in numba.prange(_CHUNKS):
        two_m = within = 0.0
        lowest = np.inf
        for i in range(c * n // _CHUNKS, (c + 1) * n // _CHUNKS):
            ci = codes[i]
            for a in range(k):
                j = indices[i, a]
                w, pw = np.float64(weights[i, a]), np.float64(partner_w[i, a])
                lowest = min(lowest, w)
                if clip:  # the directed weights, before they are symmetrised
                    w, pw = max(w, 0.0), max(pw, 0.0)
                fwd, rev = symmetric(w, pw, recip[i, a], mode, weighted)
                strength[c, ci] += fwd  # s_i gets A_ij; s_j gets A_ji from a one-way edge
                strength[c, codes[j]] += rev
                two_m += fwd + rev
                if codes[j] == ci:
                    within += fwd + rev
        sums[c, 0], sums[c, 1], sums[c, 2] = two_m, within, lowest
    class_strength = np.zeros(classes, dtype=np.float64)
    two_m = within = 0.0
    for c in range(_CHUNKS):
        class_strength += strength[c]
        two_m += sums[c, 0]
        within += sums[c, 1]
    return two_m, within, class_strength, sums[:, 2].min()


@numba.njit(parallel=True, nogil=True, cache=True)
def list_faults(indices):
    """The first row of the (N, k) lists with an index outside [0, N), with itself as a
    neighbour, and with a repeated neighbour: three ints, -1 where there is none."""
    n, k = indices.shape
    first = np.full((min(n, _CHUNKS), 3), n, dtype=np.int64)
    chunks = first.shape[0]
    for c in numba.prange(chunks):
        for i in range(c * n // chunks, (c + 1) * n // chunks):
            for a in range(k):
                j = indices[i, a]
                if (j < 0 or j >= n) and first[c, 0] == n:
                    first[c, 0] = i
                if j == i and first[c, 1] == n:
                    first[c, 1] = i
                for b in range(a):
                    if indices[i, b] == j and first[c, 2] == n:
                        first[c, 2] = i
    out = np.full(3, -1, dtype=np.int64)
    for f in range(3):
        low = first[:, f].min()
        if low < n:
            out[f] = low
    return out


_LANES = 64  # permutations one pass over the edges serves: a cache line of uint8 codes


@numba.njit(parallel=True, nogil=True, cache=True)
def permuted_sums(indices, both, strength, codes, classes):
    """For each labelling p (column p of ``codes``, (N, P)): sum of ``both`` over the edges
    whose ends share a label, and the (classes,) strength of each label. (P,), (P, classes),
    float64. Each pass over the edges serves _LANES labellings (one per lane); every sum is
    taken in edge order, so the result does not depend on the thread count."""
    n, k = indices.shape
    count = codes.shape[1]
    within = np.zeros(count, dtype=np.float64)
    class_strength = np.zeros((count, classes), dtype=np.float64)
    for b in numba.prange((count + _LANES - 1) // _LANES):
        p0 = b * _LANES
        lanes = min(_LANES, count - p0)
        acc = np.zeros(_LANES, dtype=np.float64)
        cs = class_strength[p0 : p0 + lanes]
        for i in range(n):
            ci = codes[i, p0 : p0 + lanes]
            for t in range(lanes):
                cs[t, ci[t]] += strength[i]
            for a in range(k):
                cj = codes[indices[i, a], p0 : p0 + lanes]
                w = both[i, a]
                for t in range(lanes):
                    acc[t] += w if ci[t] == cj[t] else 0.0
        within[p0 : p0 + lanes] = acc[:lanes]
    return within, class_strength


@numba.njit(inline="always")
def _mix(z):
    """splitmix64's finaliser: every input bit moves every output bit (uint64 wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(parallel=True, nogil=True, cache=True)
def _hash(words, seed):
    n = words.shape[0]
    total = np.uint64(0)
    for c in numba.prange(_CHUNKS):
        part = np.uint64(0)
        for t in range(c * n // _CHUNKS, (c + 1) * n // _CHUNKS):
            part += _mix(np.uint64(words[t]) ^ (np.uint64(t) * np.uint64(0x9E3779B97F4A7C15) + seed))
        total += part
    return total


def fingerprint(*arrays: np.ndarray) -> int:
    """A 64-bit hash of the bits of NumPy arrays (C-contiguous, 1 to 8 bytes an entry): for
    each array the sum over its words of mix(word ^ (position * golden + seed)), in parallel
    chunks. Any edit of the bits changes it except with probability about 2^-64."""
    total = 0
    for m, a in enumerate(arrays):
        words = a.reshape(-1).view({8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}[a.itemsize])
        total = (total + int(_hash(words, np.uint64((m + 1) * 0x9E3779B97F4A7C15 % 2**64)))) % 2**64
    return total
