// Just enough of CUDA to run gpugraph's kernels on the host, for tests without a GPU.
//
// Every CUDA thread of a block is a std::thread; __syncthreads is a std::barrier over the
// block; __shfl_xor_sync exchanges through a buffer with a barrier per warp. Up to two blocks
// are in flight at once, as on a GPU (HOST_SLOTS, 2 under make sanitize): launch.cpp compiles
// the kernel sources once per *slot*, each copy in its own namespace, so a copy's __shared__ variables (statics here)
// belong to the block its slot runs; each slot has its own threads, barriers and shuffle
// buffer, and runs the blocks b = slot, slot + SLOTS, ... while the other slots run theirs.
// Semantics, not speed: it checks the kernels' logic (indexing, barriers, merges) on the
// CPU, and under AddressSanitizer and ThreadSanitizer (make sanitize) their memory accesses,
// the ordering the barriers give, and that blocks running together touch disjoint memory
// or atomics only; tests/kernels/test_kernels.py runs the real thing on a GPU.
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

// What one block in flight owns: its barrier, the barriers of its warps, its shuffle buffer.
struct Slot {
    std::barrier<> block, between;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    double shuffle[1024] = {};
    explicit Slot(int threads) : block(threads), between(threads) {
        for (int w = 0; w < (threads + 31) / 32; ++w)
            warps.push_back(std::make_unique<std::barrier<>>(std::min(32, threads - 32 * w)));
    }
};
inline thread_local Slot* slot = nullptr;  // the slot of the calling (CUDA) thread

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(n)

inline void __syncthreads() { slot->block.arrive_and_wait(); }
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
    std::barrier<>& warp = *slot->warps[t / 32];
    std::memcpy(&slot->shuffle[t], &v, sizeof v);
    warp.arrive_and_wait();
    T other;
    std::memcpy(&other, &slot->shuffle[t ^ lane_mask], sizeof other);
    warp.arrive_and_wait();
    return other;
}

// Run a launch of `blocks` blocks of `threads` threads: kernels[s] is slot s's copy of the
// kernel, and the slots run their blocks at the same time (each slot's threads start once
// and meet at a barrier after each of its blocks).
inline void launch(int blocks, int threads, const std::vector<std::function<void()>>& kernels) {
    blockDim.x = threads;
    const int slots = static_cast<int>(kernels.size());
    std::vector<std::unique_ptr<Slot>> state;
    for (int s = 0; s < slots; ++s) state.push_back(std::make_unique<Slot>(threads));
    std::vector<std::thread> pool;
    for (int s = 0; s < slots; ++s)
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([s, t, slots, blocks, &kernels, &state] {
                threadIdx.x = t;
                slot = state[s].get();
                for (int b = s; b < blocks; b += slots) {
                    blockIdx.x = b;
                    kernels[s]();
                    slot->between.arrive_and_wait();  // this block ends for all its threads before the slot's next
                }
            });
    for (auto& th : pool) th.join();
}
