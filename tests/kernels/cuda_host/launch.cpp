// Host entry points for the kernels compiled with shim.h (see there), called from Python.
// The kernel sources are compiled twice: two blocks in flight at once, each copy with its
// own __shared__ variables. The kernels are extern "C" (one name whatever the namespace), so
// the second copy's kernels are renamed with a _1 suffix.
#include "shim.h"

namespace slot0 {
#include "../../../gpugraph/kernels/graph.cu"
#include "../../../gpugraph/kernels/topk.cu"
}  // namespace slot0

#define topk_merge topk_merge_1
#define edge_partners_f32 edge_partners_f32_1
#define edge_partners_f64 edge_partners_f64_1
#define triangle_count triangle_count_1
namespace slot1 {
#include "../../../gpugraph/kernels/graph.cu"
#include "../../../gpugraph/kernels/topk.cu"
}  // namespace slot1
#undef topk_merge
#undef edge_partners_f32
#undef edge_partners_f64
#undef triangle_count

// The slots' copies of one kernel launch, for launch(): HOST_SLOTS (1 or 2) blocks in flight.
#ifndef HOST_SLOTS
#define HOST_SLOTS 2
#endif
static_assert(HOST_SLOTS == 1 || HOST_SLOTS == 2, "the kernels are compiled in two slots");
inline std::vector<std::function<void()>> in_slots(std::function<void()> first, std::function<void()> second) {
    std::vector<std::function<void()>> kernels{std::move(first)};
    if (HOST_SLOTS == 2) kernels.push_back(std::move(second));
    return kernels;
}
#define IN_SLOTS(kernel, args) in_slots([=] { slot0::kernel args; }, [=] { slot1::kernel##_1 args; })

extern "C" void host_topk_merge(const float* tile, long long row_stride, long long col_stride, int rows,
                                int cols, long long row0, long long id0, long long col0, float* best_v, long long* best_i,
                                int k, float margin, const float* xr, const float* xc, const long long* nr,
                                const long long* nc, int d) {
    launch(rows, THREADS,
           IN_SLOTS(topk_merge, (tile, row_stride, col_stride, rows, cols, row0, id0, col0, best_v, best_i, k, margin,
                                 xr, xc, nr, nc, d)));
}

extern "C" void host_edge_partners_f32(const long long* indices, const float* weights, long long n, int k,
                                       unsigned char* recip, float* partner_w) {
    launch((int)((n * k + THREADS - 1) / THREADS), THREADS,
           IN_SLOTS(edge_partners_f32, (indices, weights, n, k, recip, partner_w)));
}

extern "C" void host_triangle_count(const long long* indptr, const long long* cols, const long long* src,
                                    long long m, const long long* labels, unsigned long long* total,
                                    unsigned long long* per_node, unsigned long long* motifs, int count_nodes,
                                    int count_motifs) {
    launch((int)((m + THREADS - 1) / THREADS), THREADS,
           IN_SLOTS(triangle_count, (indptr, cols, src, m, labels, total, per_node, motifs, count_nodes, count_motifs)));
}
