// Running top-k selection of cosine neighbours over similarity tiles.
//
// The host computes a tile S (rows of block A against rows of block B) with a GEMM and
// launches topk_merge once per tile (and once more on the transposed tile, so that an
// off-diagonal tile of the symmetric matrix X X^T feeds both blocks). One thread block
// owns one tile row: it holds that row's current best k (value descending, then index
// ascending) in shared memory, streams the tile row once, appends the entries that can
// still enter the top k to a candidate buffer, and merges the buffer with a bitonic sort
// whenever it could overflow, and at the end.
//
// margin == 0: the tile is exact; an entry is a candidate if it beats the current k-th.
// margin > 0:  the tile was computed in low precision (tf32, bf16) with |s_low - s| <=
//              margin; an entry is a candidate if s_low >= kth - margin, and candidates
//              are re-scored from the unit rows xr, xc by the canonical cosine (below)
//              before merging, so that a pair has one value whatever tile computed it.
//
// Compiled by gpugraph/_kernels.py with NVRTC (cupy.RawModule); no host headers.

#ifndef SORT_CAP
#define SORT_CAP 2048  // entries sorted at once in shared memory: the state plus candidates
#endif
#ifndef THREADS
#define THREADS 256
#endif
#ifndef MAX_K
#define MAX_K 256  // the largest k a launch may pass (gpugraph/_kernels.py checks it)
#endif
#define NO_INDEX 0x7fffffff

// The invariants the code below relies on, checked where it is compiled.
static_assert(THREADS % 32 == 0, "THREADS must be a multiple of 32: rescore() gives one warp a candidate");
static_assert((SORT_CAP & (SORT_CAP - 1)) == 0, "SORT_CAP must be a power of two (bitonic sort)");
static_assert(MAX_K >= 1 && SORT_CAP - MAX_K >= 2 * THREADS,
              "the candidate buffer SORT_CAP - k must hold two rounds of THREADS entries for every k <= MAX_K");

__device__ __forceinline__ bool better(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

// Sort sv/si[0..total) best-first in place (bitonic over the next power of two), then
// leave the best k in sv/si[0..k). Called by every thread of the block.
__device__ void merge_sorted(float* sv, int* si, int total) {
    int size_p = 1;
    while (size_p < total) size_p <<= 1;
    const float neg_inf = __int_as_float(0xff800000);
    for (int t = total + threadIdx.x; t < size_p; t += blockDim.x) {
        sv[t] = neg_inf;
        si[t] = NO_INDEX;
    }
    __syncthreads();
    for (int size = 2; size <= size_p; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < size_p / 2; t += blockDim.x) {
                const int lo = 2 * t - (t & (stride - 1));  // the pair (lo, lo + stride)
                const int hi = lo + stride;
                const bool best_first = (lo & size) == 0;
                const bool swap = best_first ? better(sv[hi], si[hi], sv[lo], si[lo])
                                             : better(sv[lo], si[lo], sv[hi], si[hi]);
                if (swap) {
                    const float v = sv[lo];
                    sv[lo] = sv[hi];
                    sv[hi] = v;
                    const int i = si[lo];
                    si[lo] = si[hi];
                    si[hi] = i;
                }
            }
            __syncthreads();
        }
    }
}

#define FIXED_SCALE 2305843009213693952.0  // 2^61: products are summed as exact multiples of 2^-61

// The canonical similarity (gpugraph/_select_cpu.py: cosine) of the candidates
// sv/si[k..k+count), one warp each: every product x_t y_t (exact in double) rounded to the
// nearest multiple of 2^-61 and the integers summed exactly (in any order, so the warp's
// split gives the CPU's integer), then ab / sqrt(aa bb) in double with the rows' norms
// nrow, nc[] summed the same way, clamped to [-1, 1] and rounded to float32: the same bits
// as the CPU and torch paths.
__device__ void rescore(float* sv, const int* si, int k, int count, const float* xrow, long long nrow,
                        const float* __restrict__ xc, const long long* __restrict__ nc, int col0, int d) {
    const int lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;
    for (int c = threadIdx.x >> 5; c < count; c += warps) {
        const int q = si[k + c] - col0;
        const float* xcol = xc + (long long)q * d;
        long long ab = 0;
        for (int t = lane; t < d; t += 32) ab += __double2ll_rn((double)xrow[t] * (double)xcol[t] * FIXED_SCALE);
        for (int o = 16; o > 0; o >>= 1) ab += __shfl_xor_sync(0xffffffffu, ab, o);
        if (lane == 0) sv[k + c] = (float)fmin(1.0, fmax(-1.0, (double)ab / sqrt((double)nrow * (double)nc[q])));
    }
    // Not needed by the one caller (merge_sorted writes only past these entries before its own
    // first barrier; make sanitize finds no race without it) but kept: rescore's contract is
    // that its scores are visible to the whole block when it returns.
    __syncthreads();
}

// grid: one block per tile row (rows blocks), THREADS threads.
// Tile entry (p, q) is tile[p * row_stride + q * col_stride]; it is the similarity of the
// row with global id id0 + p, whose running state is row row0 + p of best_v/best_i, and
// the column with global id col0 + q. A pair of equal ids (the diagonal) is skipped.
// best_v/best_i: (n, k) running state, best first, initialised to (-inf, -1). xr: (rows, d)
// unit rows of the row block, xc: (cols, d) of the column block, nr/nc their int64
// fixed-point norms (read only when margin > 0).
extern "C" __global__ void __launch_bounds__(THREADS)
topk_merge(const float* __restrict__ tile, long long row_stride, long long col_stride,
           int rows, int cols, long long row0, long long id0, long long col0,
           float* __restrict__ best_v, long long* __restrict__ best_i, int k, float margin,
           const float* __restrict__ xr, const float* __restrict__ xc, const long long* __restrict__ nr,
           const long long* __restrict__ nc, int d) {
    __shared__ float sv[SORT_CAP];
    __shared__ int si[SORT_CAP];
    __shared__ int count;
    __shared__ int dirty;
    const int p = blockIdx.x;
    if (p >= rows) return;  // uniform over the block
    const long long grow = id0 + p;
    float* bv = best_v + (row0 + p) * k;
    long long* bi = best_i + (row0 + p) * k;
    for (int t = threadIdx.x; t < k; t += blockDim.x) {
        sv[t] = bv[t];
        si[t] = (int)bi[t];
    }
    if (threadIdx.x == 0) {
        count = 0;
        dirty = 0;
    }
    __syncthreads();
    const float* row = tile + (long long)p * row_stride;
    const float* xrow = xr + (long long)p * d;
    const int cap = SORT_CAP - k;  // >= 2 * THREADS for every k <= MAX_K (static_assert above)
    for (int base = 0; base < cols; base += blockDim.x) {
        const float thr_v = sv[k - 1];
        const int thr_i = si[k - 1];
        const int q = base + threadIdx.x;
        if (q < cols && col0 + q != grow) {
            const float v = row[(long long)q * col_stride];
            const int gcol = (int)(col0 + q);
            const bool cand = margin > 0.f ? v >= thr_v - margin : better(v, gcol, thr_v, thr_i);
            if (cand) {
                const int slot = atomicAdd(&count, 1);
                sv[k + slot] = v;
                si[k + slot] = gcol;
            }
        }
        __syncthreads();
        const int pending = count;  // the same in every thread after the barrier
        const bool last = base + (int)blockDim.x >= cols;
        if (pending > 0 && (last || pending > cap - (int)blockDim.x)) {
            if (margin > 0.f) rescore(sv, si, k, pending, xrow, nr[p], xc, nc, (int)col0, d);
            merge_sorted(sv, si, k + pending);
            if (threadIdx.x == 0) {
                count = 0;
                dirty = 1;
            }
        }
        __syncthreads();
    }
    if (dirty) {
        for (int t = threadIdx.x; t < k; t += blockDim.x) {
            bv[t] = sv[t];
            bi[t] = si[t];
        }
    }
}
