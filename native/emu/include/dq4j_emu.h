// The host build of the kernels: what nvcc provides to native/src/*.cu, defined for g++ so that the same sources
// run on the CPU against the stand-in runtime (native/emu/runtime.cpp). Threads of a block are fibers that switch
// at __syncthreads and at warp shuffles; intrinsics follow PTX semantics (IEEE round-to-nearest-even, no FMA
// contraction, canonical NaN 0x7FFFFFFF from arithmetic, as the GPU gives), so that a kernel whose bits depend
// on them shows it here. What this cannot show: real concurrency between blocks, warps and streams, timing, and
// the hardware's own conversion units (modelled, not executed).
#pragma once

#if defined(__CUDACC__)
#error "dq4j_emu.h is the host build's stand-in for nvcc; compile native/src with g++ for it"
#endif

// Defined before the toolkit's headers, which keep definitions they find (crt/host_defines.h).
#define __host__
#define __device__
#define __global__
#define __shared__ static
#define __grid_constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

#include <cuda_runtime_api.h>
#include <vector_types.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <utility>

namespace dq4j_emu {

struct Index {
    unsigned x, y, z;
};

// The current fiber's coordinates: one kernel runs at a time (the runtime holds a lock), so plain globals do.
extern Index thread_idx;
extern Index block_idx;
extern Index block_dim;
extern Index grid_dim;

// Block-wide barrier and warp exchange (runtime.cpp). exchange() posts this lane's 8 bytes and returns lane
// `src`'s once every lane of the warp has posted.
void syncthreads();
uint64_t exchange(uint64_t mine, int src);
void* dynamic_shared();
// Device address checks for the loads and stores that go through intrinsics: out of bounds or freed is reported
// as the launch's cudaErrorIllegalAddress with the address.
void check_access(const void* p, size_t bytes, bool write);

// Enqueues a launch on `stream`; the grid runs when the stream gets to it.
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
                   std::function<void()> body);

template <typename... P>
struct Launcher {
    void (*kernel)(P...);
    dim3 grid;
    dim3 block;
    size_t shared;
    cudaStream_t stream;

    template <typename... A>
    void operator()(A&&... args) const {
        // Arguments are copied at launch time, as the GPU copies its parameter block.
        auto params = std::make_tuple(static_cast<P>(args)...);
        auto k = kernel;
        launch(reinterpret_cast<const void*>(k), grid, block, shared, stream,
               [k, params]() { std::apply(k, params); });
    }
};

template <typename... P>
Launcher<P...> launcher(void (*kernel)(P...), dim3 grid, dim3 block, size_t shared = 0, cudaStream_t stream = 0) {
    return Launcher<P...>{kernel, grid, block, shared, stream};
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    return u;
}

template <typename T>
inline T from_bits(uint64_t u) {
    T v;
    memcpy(&v, &u, sizeof(T));
    return v;
}

}  // namespace dq4j_emu

#define threadIdx (::dq4j_emu::thread_idx)
#define blockIdx (::dq4j_emu::block_idx)
#define blockDim (::dq4j_emu::block_dim)
#define gridDim (::dq4j_emu::grid_dim)

inline void __syncthreads() { ::dq4j_emu::syncthreads(); }

template <typename T>
inline T __shfl_sync(unsigned /*mask*/, T v, int src) {
    return ::dq4j_emu::from_bits<T>(::dq4j_emu::exchange(::dq4j_emu::to_bits(v), src & 31));
}

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask) {
    const int src = (int)(::dq4j_emu::thread_idx.x & 31) ^ lane_mask;
    return ::dq4j_emu::from_bits<T>(::dq4j_emu::exchange(::dq4j_emu::to_bits(v), src & 31));
}

template <typename T>
inline T __ldg(const T* p) {
    ::dq4j_emu::check_access(p, sizeof(T), false);
    return *p;
}

template <typename T>
inline T __ldcs(const T* p) {
    ::dq4j_emu::check_access(p, sizeof(T), false);
    return *p;
}

template <typename T>
inline void __stcs(T* p, T v) {
    ::dq4j_emu::check_access(p, sizeof(T), true);
    *p = v;
}

inline int min(int a, int b) { return a < b ? a : b; }

// ---- bit casts --------------------------------------------------------------------------------------------------

inline float __int_as_float(int v) { return ::dq4j_emu::from_bits<float>((uint32_t)v); }
inline float __uint_as_float(unsigned v) { return ::dq4j_emu::from_bits<float>(v); }
inline unsigned __float_as_uint(float v) { return (unsigned)::dq4j_emu::to_bits(v); }
inline int __float_as_int(float v) { return (int)(unsigned)::dq4j_emu::to_bits(v); }
inline long long __double_as_longlong(double v) { return (long long)::dq4j_emu::to_bits(v); }
inline double __longlong_as_double(long long v) { return ::dq4j_emu::from_bits<double>((uint64_t)v); }

// ---- PTX arithmetic: IEEE RNE, subnormals kept, NaN results canonical -------------------------------------------

namespace dq4j_emu {
inline float canon(float r) { return r != r ? __uint_as_float(0x7FFFFFFFu) : r; }
inline double canon(double r) { return r != r ? __longlong_as_double(0x7FFFFFFFFFFFFFFFll) : r; }
}  // namespace dq4j_emu

// volatile keeps each operation separately rounded whatever the optimizer sees (-ffp-contract=off does too).
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return ::dq4j_emu::canon((float)r); }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return ::dq4j_emu::canon((float)r); }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return ::dq4j_emu::canon((float)r); }
inline float __fmaf_rn(float a, float b, float c) { return ::dq4j_emu::canon(fmaf(a, b, c)); }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return ::dq4j_emu::canon((double)r); }
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return ::dq4j_emu::canon((double)r); }
inline double __dsqrt_rn(double a) { return ::dq4j_emu::canon(sqrt(a)); }
inline float __double2float_rn(double d) { volatile float r = (float)d; return ::dq4j_emu::canon((float)r); }

// prmt.b32 (default mode): bytes 0-3 of x, 4-7 of y; selector nibble bit 3 replicates the chosen byte's sign.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = ((uint64_t)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        const unsigned sel = (s >> (4 * i)) & 15u;
        unsigned b = (unsigned)(v >> (8 * (sel & 7u))) & 0xFFu;
        if (sel & 8u) {
            b = (b & 0x80u) ? 0xFFu : 0u;
        }
        r |= b << (8 * i);
    }
    return r;
}

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
