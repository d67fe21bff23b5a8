// Host entry points for the kernels compiled with shim.h (see there), called from Python.
#include "shim.h"

#include "../../../gpugraph/kernels/graph.cu"
#include "../../../gpugraph/kernels/topk.cu"

extern "C" void host_topk_merge(const float* tile, long long row_stride, long long col_stride, int rows,
                                int cols, long long row0, long long id0, long long col0, float* best_v, long long* best_i,
                                int k, float margin, const float* xr, const float* xc, const long long* nr,
                                const long long* nc, int d) {
    launch(rows, THREADS, [=] {
        topk_merge(tile, row_stride, col_stride, rows, cols, row0, id0, col0, best_v, best_i, k, margin, xr, xc, nr,
                   nc, d);
    });
}

extern "C" void host_edge_partners_f32(const long long* indices, const float* weights, long long n, int k,
                                       unsigned char* recip, float* partner_w) {
    launch((int)((n * k + THREADS - 1) / THREADS), THREADS,
           [=] { edge_partners_f32(indices, weights, n, k, recip, partner_w); });
}

extern "C" void host_triangle_count(const long long* indptr, const long long* cols, const long long* src,
                                    long long m, const long long* labels, unsigned long long* total,
                                    unsigned long long* per_node, unsigned long long* motifs, int count_nodes,
                                    int count_motifs) {
    launch((int)((m + THREADS - 1) / THREADS), THREADS, [=] {
        triangle_count(indptr, cols, src, m, labels, total, per_node, motifs, count_nodes, count_motifs);
    });
}
