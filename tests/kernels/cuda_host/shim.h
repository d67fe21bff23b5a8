// Just enough of CUDA to run gpugraph's kernels on the host, for tests without a GPU.
//
// One thread block at a time: every CUDA thread of the block is a std::thread (the same
// threads serve the launch's blocks one after another, a barrier between blocks), __shared__
// variables are statics (one block runs at a time, so they are the block's), and
// __syncthreads is a std::barrier over the block; __shfl_xor_sync exchanges through a
// buffer with a barrier per warp. Semantics, not speed: it checks the kernels' logic
// (indexing, barriers, merges) on the CPU, and under AddressSanitizer and ThreadSanitizer
// (make sanitize) their memory accesses and the ordering the barriers give; tests/kernels/
// test_kernels.py runs the real thing on a GPU.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct Dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local Dim3 threadIdx;
inline thread_local Dim3 blockIdx;
inline Dim3 blockDim;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline double shuffle_buffer[1024];

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(n)

inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __int_as_float(unsigned int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
inline long long __double2ll_rn(double v) { return std::llrint(v); }  // round to nearest even
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
template <typename T>
inline T __shfl_xor_sync(unsigned int, T v, int lane_mask) {
    static_assert(sizeof(T) <= sizeof(double), "a shuffle moves at most 8 bytes");
    const unsigned t = threadIdx.x;
    std::barrier<>& warp = *warp_barriers[t / 32];
    std::memcpy(&shuffle_buffer[t], &v, sizeof v);
    warp.arrive_and_wait();
    T other;
    std::memcpy(&other, &shuffle_buffer[t ^ lane_mask], sizeof other);
    warp.arrive_and_wait();
    return other;
}

// Run `kernel` over `blocks` blocks of `threads` threads, one block after another: the
// block's threads start once and meet at a barrier after each block.
inline void launch(int blocks, int threads, const std::function<void()>& kernel) {
    blockDim.x = threads;
    std::barrier<> barrier(threads), between(threads);
    block_barrier = &barrier;
    warp_barriers.clear();
    for (int w = 0; w < (threads + 31) / 32; ++w)
        warp_barriers.push_back(std::make_unique<std::barrier<>>(std::min(32, threads - 32 * w)));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([t, blocks, &kernel, &between] {
            threadIdx.x = t;
            for (int b = 0; b < blocks; ++b) {
                blockIdx.x = b;
                kernel();
                between.arrive_and_wait();  // the block ends for all its threads before the next starts
            }
        });
    for (auto& th : pool) th.join();
}
