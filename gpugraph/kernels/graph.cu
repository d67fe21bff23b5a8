// Graph kernels over kNN lists and CSR adjacency: reciprocity of directed edges, and
// triangle / labelled-triangle counting by sorted-neighbour intersection.
//
// Compiled by gpugraph/_kernels.py with NVRTC (cupy.RawModule); no host headers.

// For every directed edge i -> j = indices[i, a] (one thread each): whether j lists i
// too, and the weight of that reverse edge (0 if absent). indices: (n, k) int64 rows; a
// slot holding -1 is empty (fewer than k neighbours) and has no reverse edge.
#define DEFINE_EDGE_PARTNERS(NAME, T)                                                     \
    extern "C" __global__ void NAME(const long long* __restrict__ indices,                \
                                    const T* __restrict__ weights, long long n, int k,    \
                                    unsigned char* __restrict__ recip,                    \
                                    T* __restrict__ partner_w) {                          \
        const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;             \
        if (e >= n * k) return;                                                           \
        const long long i = e / k;                                                        \
        const long long j = indices[e];                                                   \
        const long long* back = indices + (j >= 0 ? j : 0) * k;  /* never read for j < 0 */ \
        unsigned char found = 0;                                                          \
        T w = (T)0;                                                                       \
        for (int b = 0; b < k && j >= 0; ++b) {                                           \
            if (back[b] == i) {                                                           \
                found = 1;                                                                \
                w = weights[j * k + b];                                                   \
                break;                                                                    \
            }                                                                             \
        }                                                                                 \
        recip[e] = found;                                                                 \
        partner_w[e] = w;                                                                 \
    }

DEFINE_EDGE_PARTNERS(edge_partners_f32, float)
DEFINE_EDGE_PARTNERS(edge_partners_f64, double)

// Triangles of an undirected graph given as its degree-oriented DAG in CSR form: every
// edge points from the lower to the higher (degree, index) rank, and each row's columns
// are sorted. A triangle u < v < w (by rank) is the oriented wedge u -> v, u -> w closed
// by v -> w, found exactly once: at edge (u, v), as a common out-neighbour w of u and v.
// One thread per oriented edge e = (src[e], cols[e]); out-degrees are O(sqrt(m)).
//
// total:    one counter, += triangles.
// per_node: (n,) counters, read when count_nodes; each triangle adds 1 to its three nodes.
// labels:   (n,) class codes, read when count_motifs, with motifs (3,) counters: all one
//           class, exactly two classes, three classes.
extern "C" __global__ void triangle_count(const long long* __restrict__ indptr,
                                          const long long* __restrict__ cols,
                                          const long long* __restrict__ src, long long m,
                                          const long long* __restrict__ labels,
                                          unsigned long long* __restrict__ total,
                                          unsigned long long* __restrict__ per_node,
                                          unsigned long long* __restrict__ motifs,
                                          int count_nodes, int count_motifs) {
    const long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= m) return;
    const long long u = src[e];
    const long long v = cols[e];
    long long a = indptr[u], a_end = indptr[u + 1];
    long long b = indptr[v], b_end = indptr[v + 1];
    unsigned long long found = 0, same = 0, pair = 0, distinct = 0;
    const long long lu = count_motifs ? labels[u] : 0;
    const long long lv = count_motifs ? labels[v] : 0;
    while (a < a_end && b < b_end) {
        const long long x = cols[a], y = cols[b];
        if (x < y) {
            ++a;
        } else if (y < x) {
            ++b;
        } else {  // w = x closes the triangle (u, v, w)
            ++found;
            if (count_nodes) atomicAdd(per_node + x, 1ull);
            if (count_motifs) {
                const long long lw = labels[x];
                if (lu == lv && lv == lw) ++same;
                else if (lu != lv && lv != lw && lu != lw) ++distinct;
                else ++pair;
            }
            ++a;
            ++b;
        }
    }
    if (found == 0) return;
    atomicAdd(total, found);
    if (count_nodes) {
        atomicAdd(per_node + u, found);
        atomicAdd(per_node + v, found);
    }
    if (count_motifs) {
        if (same) atomicAdd(motifs, same);
        if (pair) atomicAdd(motifs + 1, pair);
        if (distinct) atomicAdd(motifs + 2, distinct);
    }
}
