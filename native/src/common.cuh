// Shared device helpers: exact conversions (bit-identical to the JVM on x86-64, which is what the scalar oracle
// runs on), vector stores, launch sizing and argument checks.
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "dequant4j_cuda.h"

namespace dq4j {

constexpr unsigned FULL_MASK = 0xffffffffu;

// f32(1/127), bitsandbytes' int8_vectorwise_dequant constant (0x3C010204).
__device__ __forceinline__ float inv127() { return __int_as_float(0x3C010204); }

// ---- products and sums with the JVM's NaNs -------------------------------------------------------------------

// A NaN that arithmetic produced, as x86 (so the JVM the oracle runs on) makes it: a NaN operand's payload,
// quieted (the first operand's if both are NaN); an invalid operation on non-NaNs (0 * inf, inf - inf) gives the
// default NaN 0xFFC00000. The GPU gives 0x7FFFFFFF for all of these.
__device__ __forceinline__ float x86_nan(float a, float b) {
    const uint32_t ua = __float_as_uint(a);
    const uint32_t ub = __float_as_uint(b);
    if ((ua & 0x7FFFFFFFu) > 0x7F800000u) {
        return __uint_as_float(ua | 0x00400000u);
    }
    if ((ub & 0x7FFFFFFFu) > 0x7F800000u) {
        return __uint_as_float(ub | 0x00400000u);
    }
    return __uint_as_float(0xFFC00000u);
}

// a * b and a + b, one IEEE operation each, with x86_nan's NaNs: used where dequantization multiplies by a scale
// that a checkpoint may hold as inf or NaN, so that even NaN payloads match the CPU (not in the merge steps'
// arithmetic: see docs/CUDA.md).
__device__ __forceinline__ float mul_x86(float a, float b) {
    const float r = __fmul_rn(a, b);
    return r != r ? x86_nan(a, b) : r;
}

__device__ __forceinline__ float add_x86(float a, float b) {
    const float r = __fadd_rn(a, b);
    return r != r ? x86_nan(a, b) : r;
}

// ---- to float32 -------------------------------------------------------------------------------------------------

// Float.float16ToFloat on x86-64: exact for every non-NaN; a NaN keeps sign and payload and gets the quiet bit.
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
    if ((h & 0x7C00u) == 0x7C00u && (h & 0x03FFu) != 0) {
        return __uint_as_float(((uint32_t)(h & 0x8000u) << 16) | 0x7FC00000u | ((uint32_t)(h & 0x03FFu) << 13));
    }
    return __half2float(__ushort_as_half(h));
}

__device__ __forceinline__ float bf16_to_f32(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }

// Java's (float) double on x86-64: RNE; a NaN keeps sign and the payload's top bits and gets the quiet bit.
__device__ __forceinline__ float f64_to_f32(double d) {
    unsigned long long bits = (unsigned long long)__double_as_longlong(d);
    if ((bits & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull) {
        return __uint_as_float((uint32_t)(bits >> 32 & 0x80000000u) | 0x7FC00000u
                               | (uint32_t)((bits & 0x000FFFFFFFFFFFFFull) >> 29));
    }
    return __double2float_rn(d);
}

// ---- from float32 -----------------------------------------------------------------------------------------------

// Float.floatToFloat16 on x86-64: IEEE RNE (subnormals included); a NaN keeps sign and the payload's top bits
// and gets the quiet bit.
__device__ __forceinline__ uint16_t f16_nan(float v) {
    uint32_t b = __float_as_uint(v);
    return (uint16_t)((b >> 16 & 0x8000u) | 0x7E00u | ((b & 0x007FFFFFu) >> 13));
}

__device__ __forceinline__ uint32_t f16x2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    uint32_t u = *reinterpret_cast<uint32_t*>(&h);
    if (lo != lo) {
        u = (u & 0xFFFF0000u) | f16_nan(lo);
    }
    if (hi != hi) {
        u = (u & 0x0000FFFFu) | ((uint32_t)f16_nan(hi) << 16);
    }
    return u;
}

// c10::BFloat16 / ScalarKernels.toBf16: (bits + 0x7FFF + lsb) >> 16, NaN -> 0x7FC0. Integer arithmetic, so it is
// the oracle's rounding by construction.
__device__ __forceinline__ uint32_t bf16_bits(float v) {
    uint32_t b = __float_as_uint(v);
    uint32_t r = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
    return (b & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r;
}

__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
    return __byte_perm(bf16_bits(lo), bf16_bits(hi), 0x5410);
}

// Eight consecutive outputs at a 16-byte aligned address (32 bytes for F32), as streaming stores: the output is
// written once and never read back, so it should not displace the inputs from L2.
template <int OUT>
__device__ __forceinline__ void store8(void* out, int64_t i, const float* v) {
    if (OUT == DQ4J_F32) {
        float4* p = reinterpret_cast<float4*>(static_cast<float*>(out) + i);
        __stcs(p, make_float4(v[0], v[1], v[2], v[3]));
        __stcs(p + 1, make_float4(v[4], v[5], v[6], v[7]));
    } else if (OUT == DQ4J_F16) {
        __stcs(reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + i),
               make_uint4(f16x2(v[0], v[1]), f16x2(v[2], v[3]), f16x2(v[4], v[5]), f16x2(v[6], v[7])));
    } else {
        __stcs(reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + i),
               make_uint4(bf16x2(v[0], v[1]), bf16x2(v[2], v[3]), bf16x2(v[4], v[5]), bf16x2(v[6], v[7])));
    }
}

template <int OUT>
__device__ __forceinline__ void store1(void* out, int64_t i, float v) {
    if (OUT == DQ4J_F32) {
        static_cast<float*>(out)[i] = v;
    } else if (OUT == DQ4J_F16) {
        static_cast<uint16_t*>(out)[i] = (uint16_t)(f16x2(v, 0.0f) & 0xFFFFu);
    } else {
        static_cast<uint16_t*>(out)[i] = (uint16_t)bf16_bits(v);
    }
}

// ---- plain values ----------------------------------------------------------------------------------------------

// Eight values from a 16-byte aligned address (16 bytes of F16/BF16, 32 of F32, 64 of F64).
template <int SRC>
__device__ __forceinline__ void load8(const void* data, int64_t e, float* v) {
    if (SRC == DQ4J_F32) {
        const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(data) + e);
        float4 a = __ldcs(p);
        float4 b = __ldcs(p + 1);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else if (SRC == DQ4J_F64) {
        const double2* p = reinterpret_cast<const double2*>(static_cast<const double*>(data) + e);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            double2 d = __ldcs(p + i);
            v[2 * i] = f64_to_f32(d.x);
            v[2 * i + 1] = f64_to_f32(d.y);
        }
    } else {
        uint4 p = __ldcs(reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(data) + e));
        const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t lo = (uint16_t)(w[i] & 0xFFFFu);
            const uint16_t hi = (uint16_t)(w[i] >> 16);
            v[2 * i] = SRC == DQ4J_F16 ? f16_to_f32(lo) : bf16_to_f32(lo);
            v[2 * i + 1] = SRC == DQ4J_F16 ? f16_to_f32(hi) : bf16_to_f32(hi);
        }
    }
}

template <int SRC>
__device__ __forceinline__ float load1(const void* data, int64_t e) {
    if (SRC == DQ4J_F32) {
        return static_cast<const float*>(data)[e];
    } else if (SRC == DQ4J_F64) {
        return f64_to_f32(static_cast<const double*>(data)[e]);
    } else if (SRC == DQ4J_F16) {
        return f16_to_f32(static_cast<const uint16_t*>(data)[e]);
    } else {
        return bf16_to_f32(static_cast<const uint16_t*>(data)[e]);
    }
}

// ---- the 4-bit absmax -------------------------------------------------------------------------------------------

// Scale of block `blk`, counted from the source's first block (elem0 >> block_shift).
__device__ __forceinline__ float block_scale(const dq4j_source& s, int64_t blk) {
    if (s.nested) {
        int64_t first = s.elem0 >> s.block_shift;
        int64_t nested = ((first + blk) >> 8) - (first >> 8);
        float t = mul_x86(__ldg(s.nested_map + __ldg(s.absmax_code + blk)), __ldg(s.nested_absmax + nested));
        return add_x86(t, s.nested_offset);
    }
    return __ldg(s.absmax + blk);
}

// ---- host side --------------------------------------------------------------------------------------------------

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline bool out_dtype_ok(int32_t t) { return t == DQ4J_F32 || t == DQ4J_F16 || t == DQ4J_BF16; }

// Checks a source's own fields (not the range it is used for).
int32_t check_source(const dq4j_source* s);

// Blocks for a grid-stride kernel: enough to fill every SM `per_sm` times, never more than the work needs. Called
// right before every launch, it first clears the calling thread's stale (non-sticky) error, so that
// launch_result() reports the launch's own.
int grid_for(int64_t work_items, int threads, int per_sm);

// cudaGetLastError after a launch, as a DQ4J code.
int32_t launch_result();

}  // namespace dq4j
