// Dequantization and conversion without merge steps: memory-bound streaming kernels. Each thread moves one
// 16-byte vector of input per iteration (32 nibbles, 16 int8 or 8 plain values), looks 4-bit codes up in a
// warp-shuffle table, converts in pairs and writes with 16-byte streaming stores; a grid-stride loop covers any n.
#include "common.cuh"

namespace dq4j {
namespace {

constexpr int THREADS = 256;
constexpr int BLOCKS_PER_SM = 8;

template <int OUT>
__device__ __forceinline__ void store_tail(void* out, int64_t e, int64_t n, const float* v, int count) {
#pragma unroll
    for (int i = 0; i < count; i++) {
        if (e + i < n) {
            store1<OUT>(out, e + i, v[i]);
        }
    }
}

// 4-bit: one uint4 = 16 packed bytes = 32 elements, all in one block (blocksize >= 32 and elem0 % 32 == 0).
template <int OUT>
__global__ void __launch_bounds__(THREADS) k_dequant4(const __grid_constant__ dq4j_source s, int64_t n,
                                                        void* __restrict__ out) {
    const int lane = threadIdx.x & 31;
    // Lane l holds code[l & 15]; a lookup is a shuffle from the lane numbered by the nibble.
    const float lut = s.code[lane & 15];
    const int64_t nvec = (n + 31) >> 5;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t phase = s.elem0 & ((1 << s.block_shift) - 1);
    const uint8_t* bytes = static_cast<const uint8_t*>(s.data);
    // The loop is uniform across the warp (w0 is the warp's first vector), so every lane takes part in the
    // shuffles even past the end.
    for (int64_t w0 = (int64_t)blockIdx.x * blockDim.x + (threadIdx.x & ~31); w0 < nvec; w0 += stride) {
        const int64_t v = w0 + lane;
        const int64_t e = v << 5;
        uint32_t w[4] = {0u, 0u, 0u, 0u};
        float scale = 0.0f;
        if (v < nvec) {
            if (e + 32 <= n) {
                uint4 p = __ldcs(reinterpret_cast<const uint4*>(bytes) + v);
                w[0] = p.x;
                w[1] = p.y;
                w[2] = p.z;
                w[3] = p.w;
            } else {
                const int64_t nb = (n - e + 1) >> 1;
#pragma unroll
                for (int b = 0; b < 16; b++) {
                    if (b < nb) {
                        w[b >> 2] |= (uint32_t)bytes[(e >> 1) + b] << (8 * (b & 3));
                    }
                }
            }
            scale = block_scale(s, (phase + e) >> s.block_shift);
        }
        float vals[32];
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const uint32_t byte = (w[j] >> (8 * b)) & 0xFFu;
                // High nibble first: element 2i is byte i >> 4 (bitsandbytes' packing).
                vals[8 * j + 2 * b] = mul_x86(__shfl_sync(FULL_MASK, lut, (int)(byte >> 4)), scale);
                vals[8 * j + 2 * b + 1] = mul_x86(__shfl_sync(FULL_MASK, lut, (int)(byte & 15u)), scale);
            }
        }
        if (v < nvec) {
            if (e + 32 <= n) {
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    store8<OUT>(out, e + 8 * q, vals + 8 * q);
                }
            } else {
                store_tail<OUT>(out, e, n, vals, 32);
            }
        }
    }
}

// int8: one uint4 = 16 values; f32(f32(q * SCB[row]) * f32(1/127)).
template <int OUT>
__global__ void __launch_bounds__(THREADS) k_dequant_int8(const __grid_constant__ dq4j_source s, int64_t n,
                                                            void* __restrict__ out) {
    const int64_t nvec = (n + 15) >> 4;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int8_t* q = static_cast<const int8_t*>(s.data);
    const int64_t cols = s.cols;
    const int64_t first_row = s.elem0 / cols;
    const float inv = inv127();
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
        const int64_t e = v << 4;
        int8_t x[16];
        if (e + 16 <= n) {
            uint4 p = __ldcs(reinterpret_cast<const uint4*>(q) + v);
            const uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
            for (int i = 0; i < 16; i++) {
                x[i] = (int8_t)(w[i >> 2] >> (8 * (i & 3)));
            }
        } else {
#pragma unroll
            for (int i = 0; i < 16; i++) {
                x[i] = e + i < n ? q[e + i] : (int8_t)0;
            }
        }
        // The row of each element: the vector may cross rows when cols % 16 != 0.
        int64_t row = (s.elem0 + e) / cols;
        int64_t next = (row + 1) * cols - s.elem0;
        float scb = __ldg(s.scb + (row - first_row));
        float vals[16];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            if (e + i >= next && e + i < n) {
                row = (s.elem0 + e + i) / cols;
                next = (row + 1) * cols - s.elem0;
                scb = __ldg(s.scb + (row - first_row));
            }
            vals[i] = mul_x86(mul_x86((float)x[i], scb), inv);
        }
        if (e + 16 <= n) {
            store8<OUT>(out, e, vals);
            store8<OUT>(out, e + 8, vals + 8);
        } else {
            store_tail<OUT>(out, e, n, vals, 16);
        }
    }
}

template <int SRC, int OUT>
__global__ void __launch_bounds__(THREADS) k_convert(const void* __restrict__ data, int64_t n,
                                                       void* __restrict__ out) {
    const int64_t nvec = (n + 7) >> 3;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t v = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
        const int64_t e = v << 3;
        float vals[8];
        if (e + 8 <= n) {
            load8<SRC>(data, e, vals);
            store8<OUT>(out, e, vals);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                vals[i] = e + i < n ? load1<SRC>(data, e + i) : 0.0f;
            }
            store_tail<OUT>(out, e, n, vals, 8);
        }
    }
}

template <int OUT>
int32_t launch_convert(const dq4j_source* s, int64_t n, void* out, cudaStream_t stream) {
    const int grid = grid_for((n + 7) >> 3, THREADS, BLOCKS_PER_SM);
    switch (s->dtype) {
        case DQ4J_F32:
            k_convert<DQ4J_F32, OUT><<<grid, THREADS, 0, stream>>>(s->data, n, out);
            break;
        case DQ4J_F16:
            k_convert<DQ4J_F16, OUT><<<grid, THREADS, 0, stream>>>(s->data, n, out);
            break;
        case DQ4J_BF16:
            k_convert<DQ4J_BF16, OUT><<<grid, THREADS, 0, stream>>>(s->data, n, out);
            break;
        default:
            k_convert<DQ4J_F64, OUT><<<grid, THREADS, 0, stream>>>(s->data, n, out);
            break;
    }
    return launch_result();
}

template <int OUT>
int32_t launch_dequant(const dq4j_source* s, int64_t n, void* out, cudaStream_t stream) {
    switch (s->kind) {
        case DQ4J_SRC_4BIT: {
            const int grid = grid_for((n + 31) >> 5, THREADS, BLOCKS_PER_SM);
            k_dequant4<OUT><<<grid, THREADS, 0, stream>>>(*s, n, out);
            return launch_result();
        }
        case DQ4J_SRC_INT8: {
            const int grid = grid_for((n + 15) >> 4, THREADS, BLOCKS_PER_SM);
            k_dequant_int8<OUT><<<grid, THREADS, 0, stream>>>(*s, n, out);
            return launch_result();
        }
        default:
            return launch_convert<OUT>(s, n, out, stream);
    }
}

}  // namespace
}  // namespace dq4j

extern "C" int32_t dq4j_dequant(const dq4j_source* src, int64_t n, int32_t out_dtype, void* out, void* stream) {
    using namespace dq4j;
    int32_t rc = check_source(src);
    if (rc != DQ4J_OK) {
        return rc;
    }
    if (n < 0 || out == nullptr || !out_dtype_ok(out_dtype)) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    const int64_t align = src->kind == DQ4J_SRC_4BIT ? 32 : src->kind == DQ4J_SRC_INT8 ? 16 : 1;
    if (!aligned16(src->data) || !aligned16(out) || src->elem0 % align != 0) {
        return DQ4J_ERR_MISALIGNED;
    }
    if (n == 0) {
        return DQ4J_OK;
    }
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (out_dtype) {
        case DQ4J_F32:
            return launch_dequant<DQ4J_F32>(src, n, out, s);
        case DQ4J_F16:
            return launch_dequant<DQ4J_F16>(src, n, out, s);
        default:
            return launch_dequant<DQ4J_BF16>(src, n, out, s);
    }
}
