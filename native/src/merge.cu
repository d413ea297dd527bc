// The fused dequantize + merge kernel. A block owns a DQ4J_TILE_ROWS x DQ4J_TILE_COLS output tile (grid-stride over
// tiles); each thread holds a 4 x 8 micro-tile in registers. Low-rank steps stage a k-slice of left (rows of the
// tile) and right (columns of the tile) in shared memory and accumulate in fp32 registers in the oracle's
// per-element order (k ascending); the base is dequantized straight from the packed weight, every step runs on
// the registers, and the tile is rounded once and written with 16-byte stores. No fp32 tensor touches global
// memory.
//
// Warp w owns columns [32w, 32w + 32) of the tile and all its rows; lane (lr = lane / 4, lc = lane % 4) owns rows
// 4lr .. 4lr+3 and columns 32w + 8lc .. +7. A k-step then reads 8 distinct float4 of the left slice and 4 distinct
// float4 of each right half: one shared-memory wavefront each for 32 multiply-adds.
//
// Inside a launch everything is indexed relative to the chunk in 32-bit (the host checks rows * cols <= 2^30 and
// moves the step pointers to the chunk's first row): 64-bit index arithmetic cost a third of the registers.
#include "common.cuh"

namespace dq4j {
namespace {

constexpr int TM = DQ4J_TILE_ROWS;
constexpr int TN = DQ4J_TILE_COLS;
constexpr int KS = 32;  // k-slice staged in shared memory
constexpr int THREADS = 256;
constexpr int RM = 4;
constexpr int RN = 8;
static_assert(THREADS / 32 * 32 == TN, "each warp owns 32 columns of the tile");
static_assert(8 * RM == TM && 4 * RN == 32, "lanes tile the warp's 32 x 32 block");

constexpr int64_t MAX_ELEMENTS = int64_t(1) << 30;

constexpr int MODE_APPLY = 0;
constexpr int MODE_NORM_ROW = 1;
constexpr int MODE_NORM_COL = 2;

// The source as the kernel sees it: pointers at the chunk, phases of the chunk's first element.
struct Source {
    int32_t kind;
    int32_t dtype;
    int32_t nested;
    int32_t shift;    // log2(blocksize)
    int32_t e_phase;  // elem0 & 1: nibble parity of the first element
    int32_t b_phase;  // elem0 % blocksize: position in its block
    int32_t n_phase;  // (elem0 >> shift) % 256: position of its block in the nested block
    const void* data;
    const float* absmax;
    const uint8_t* absmax_code;
    const float* nested_map;
    const float* nested_absmax;
    const float* scb;
    float nested_offset;
    float code[16];
};

// A step with its per-row and per-element arrays moved to the chunk.
struct Step {
    int32_t kind;
    int32_t r;
    float scale;
    int32_t right_vec;  // right can be read as float4 (cols % 4 == 0, 16-byte aligned)
    const float* left;
    const float* right;
    const float* factor;
    const float* values;
    const int32_t* row_map;
};

struct MergeParams {
    Source src;
    Step steps[DQ4J_MAX_STEPS];
    int32_t rows;
    int32_t cols;
    int32_t nsteps;     // steps to run (APPLY), or the DoRA step + 1 (norm passes)
    int32_t fast_in;    // 4-bit, cols % 8 == 0, data 16-byte aligned: one 32-bit load per 8 elements
    int32_t fast_out;   // cols % 8 == 0, out 16-byte aligned: one 16-byte store per 8 elements (32 for F32)
    int32_t mode;       // MODE_*
    int32_t out_dtype;  // MODE_APPLY: DQ4J_F32/F16/BF16
    int32_t save_w;     // a low-rank step follows the first step: w waits in shared memory during its k-loop
    void* out;
    double* partials;
};

struct Tile {
    float L[KS][TM + 4];  // left slice, transposed: L[k][row]; +4 keeps rows 16-byte aligned
    float R[KS][TN];      // right slice: R[k][col]
};

__host__ __device__ __forceinline__ bool is_lowrank(int32_t kind) {
    return kind == DQ4J_STEP_LORA || kind == DQ4J_STEP_DORA_ROW || kind == DQ4J_STEP_DORA_COL;
}

// acc[i][j] = sum over k of left[row_i][k] * right[k][col_j], k ascending. Starting from -0.0 makes the first
// addition exact (-0 + x == x for every x), so this equals the oracle's acc = l0*r0; acc += lk*rk.
template <bool FMA>
__device__ __forceinline__ void lowrank(const MergeParams& P, const Step& st, int tr, int tc, Tile& sm,
                                        float (&acc)[RM][RN]) {
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int rr = (lane >> 2) * RM;
    const int cc = (tid >> 5) * 32 + (lane & 3) * RN;
#pragma unroll
    for (int i = 0; i < RM; i++) {
#pragma unroll
        for (int j = 0; j < RN; j++) {
            acc[i][j] = -0.0f;
        }
    }
    const int r = st.r;
    for (int kb = 0; kb < r; kb += KS) {
        const int ks = min(KS, r - kb);
        __syncthreads();  // the previous slice, step or tile is done with the shared arrays
        // These copy loops stay rolled: unrolled, their loads in flight cost ~50 registers.
#pragma unroll 1
        for (int idx = tid; idx < TM * KS; idx += THREADS) {
            const int m = idx / KS;
            const int kk = idx % KS;
            const int row = tr * TM + m;
            sm.L[kk][m] = kk < ks && row < P.rows ? __ldg(st.left + row * r + kb + kk) : 0.0f;
        }
        if (st.right_vec) {
#pragma unroll 1
            for (int idx = tid; idx < KS * TN / 4; idx += THREADS) {
                const int kk = idx / (TN / 4);
                const int n4 = idx % (TN / 4);
                const int c = tc * TN + n4 * 4;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (kk < ks && c < P.cols) {
                    v = __ldg(reinterpret_cast<const float4*>(st.right + (size_t)(kb + kk) * P.cols + c));
                }
                *reinterpret_cast<float4*>(&sm.R[kk][n4 * 4]) = v;
            }
        } else {
#pragma unroll 1
            for (int idx = tid; idx < KS * TN; idx += THREADS) {
                const int kk = idx / TN;
                const int n = idx % TN;
                const int c = tc * TN + n;
                sm.R[kk][n] = kk < ks && c < P.cols ? __ldg(st.right + (size_t)(kb + kk) * P.cols + c) : 0.0f;
            }
        }
        __syncthreads();
        // Not unrolled: with two blocks per SM (128 registers) an unrolled k-loop spills on some targets.
#pragma unroll 1
        for (int kk = 0; kk < ks; kk++) {
            const float4 a = *reinterpret_cast<const float4*>(&sm.L[kk][rr]);
            const float4 b0 = *reinterpret_cast<const float4*>(&sm.R[kk][cc]);
            const float4 b1 = *reinterpret_cast<const float4*>(&sm.R[kk][cc + 4]);
            const float av[RM] = {a.x, a.y, a.z, a.w};
            const float bv[RN] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
            for (int i = 0; i < RM; i++) {
#pragma unroll
                for (int j = 0; j < RN; j++) {
                    acc[i][j] = FMA ? __fmaf_rn(av[i], bv[j], acc[i][j])
                                    : __fadd_rn(acc[i][j], __fmul_rn(av[i], bv[j]));
                }
            }
        }
    }
}

// Scale of the block holding chunk element kl.
__device__ __forceinline__ float scale_at(const Source& s, int kl) {
    const int blk = (s.b_phase + kl) >> s.shift;
    if (s.nested) {
        const float t = mul_x86(__ldg(s.nested_map + __ldg(s.absmax_code + blk)),
                                __ldg(s.nested_absmax + ((s.n_phase + blk) >> 8)));
        return add_x86(t, s.nested_offset);
    }
    return __ldg(s.absmax + blk);
}

// One 4-bit base value: chunk element kl.
__device__ __forceinline__ float base1_4bit(const Source& s, const float* lut, int kl) {
    const int k = s.e_phase + kl;
    const uint32_t b = static_cast<const uint8_t*>(s.data)[k >> 1];
    const uint32_t nib = (k & 1) ? (b & 15u) : (b >> 4);
    return mul_x86(lut[nib], scale_at(s, kl));
}

// Template tag of int8 sources in load_base_other (plain sources use their DQ4J_F* dtype).
constexpr int KIND_INT8 = 100;

// One int8 (KIND_INT8) or plain (KIND = the dtype) base value: chunk element kl, in chunk row `row`.
template <int KIND>
__device__ __forceinline__ float base1_other(const Source& s, int kl, int row) {
    if (KIND == KIND_INT8) {
        const float q = (float)static_cast<const int8_t*>(s.data)[kl];
        return mul_x86(mul_x86(q, __ldg(s.scb + row)), inv127());
    }
    return load1<KIND>(s.data, kl);
}

// Eight 4-bit values from chunk element kl, a multiple of 8 (the fast path): one 32-bit load, one scale.
__device__ __forceinline__ void base8(const Source& s, const float* lut, int kl, float* v) {
    const uint8_t* bytes = static_cast<const uint8_t*>(s.data) + (kl >> 1);
    const uint32_t word = __ldcs(reinterpret_cast<const unsigned int*>(bytes));
    const float scale = scale_at(s, kl);
#pragma unroll
    for (int b = 0; b < 4; b++) {
        const uint32_t byte = (word >> (8 * b)) & 0xFFu;
        v[2 * b] = mul_x86(lut[byte >> 4], scale);
        v[2 * b + 1] = mul_x86(lut[byte & 15u], scale);
    }
}

template <int KIND>
__device__ __forceinline__ void load_base_other(const MergeParams& P, int r_base, int c_base, float (&w)[RM][RN]) {
#pragma unroll
    for (int i = 0; i < RM; i++) {
        const int row = r_base + i;
        const int kl = row * P.cols + c_base;
#pragma unroll
        for (int j = 0; j < RN; j++) {
            w[i][j] = row < P.rows && c_base + j < P.cols ? base1_other<KIND>(P.src, kl + j, row) : 0.0f;
        }
    }
}

// Base values of the micro-tile. Int8 and plain sources (unquantized layers, replacements) take a per-element
// path: vector paths for them would cost registers in every instantiation for tensors that are rare in merges.
template <bool FOURBIT>
__device__ __forceinline__ void load_base(const MergeParams& P, const float* lut, int r_base, int c_base,
                                          float (&w)[RM][RN]) {
    if constexpr (!FOURBIT) {
        if (P.src.kind == DQ4J_SRC_INT8) {
            load_base_other<KIND_INT8>(P, r_base, c_base, w);
        } else if (P.src.dtype == DQ4J_F32) {
            load_base_other<DQ4J_F32>(P, r_base, c_base, w);
        } else if (P.src.dtype == DQ4J_F16) {
            load_base_other<DQ4J_F16>(P, r_base, c_base, w);
        } else if (P.src.dtype == DQ4J_BF16) {
            load_base_other<DQ4J_BF16>(P, r_base, c_base, w);
        } else {
            load_base_other<DQ4J_F64>(P, r_base, c_base, w);
        }
    } else {
#pragma unroll
        for (int i = 0; i < RM; i++) {
            const int row = r_base + i;
            const bool row_ok = row < P.rows;
            const int kl = row * P.cols + c_base;
            if (P.fast_in) {
                if (row_ok && c_base < P.cols) {
                    base8(P.src, lut, kl, w[i]);
                } else {
#pragma unroll
                    for (int j = 0; j < RN; j++) {
                        w[i][j] = 0.0f;
                    }
                }
            } else {
#pragma unroll
                for (int j = 0; j < RN; j++) {
                    w[i][j] = row_ok && c_base + j < P.cols ? base1_4bit(P.src, lut, kl + j) : 0.0f;
                }
            }
        }
    }
}

// One step on the micro-tile. `norm` (the DoRA step whose norms are being computed) stops before the scaling.
__device__ __forceinline__ void apply_step(const MergeParams& P, const Step& st, int r_base, int c_base,
                                           const float (&acc)[RM][RN], float (&w)[RM][RN], bool norm) {
#pragma unroll
    for (int i = 0; i < RM; i++) {
        const int row = r_base + i;
        if (row >= P.rows) {
            continue;
        }
        switch (st.kind) {
            case DQ4J_STEP_LORA:
#pragma unroll
                for (int j = 0; j < RN; j++) {
                    w[i][j] = __fadd_rn(w[i][j], __fmul_rn(acc[i][j], st.scale));
                }
                break;
            case DQ4J_STEP_DORA_ROW: {
                const float f = norm ? 1.0f : __ldg(st.factor + row);
#pragma unroll
                for (int j = 0; j < RN; j++) {
                    w[i][j] = __fadd_rn(w[i][j], __fmul_rn(acc[i][j], st.scale));
                    if (!norm) {
                        w[i][j] = __fmul_rn(f, w[i][j]);
                    }
                }
                break;
            }
            case DQ4J_STEP_DORA_COL:
#pragma unroll
                for (int j = 0; j < RN; j++) {
                    w[i][j] = __fadd_rn(w[i][j], __fmul_rn(acc[i][j], st.scale));
                    if (!norm && c_base + j < P.cols) {
                        w[i][j] = __fmul_rn(__ldg(st.factor + c_base + j), w[i][j]);
                    }
                }
                break;
            case DQ4J_STEP_ADD_SCALED:
#pragma unroll
                for (int j = 0; j < RN; j++) {
                    if (c_base + j < P.cols) {
                        const float v = __ldg(st.values + row * P.cols + c_base + j);
                        w[i][j] = __fadd_rn(w[i][j], __fmul_rn(v, st.scale));
                    }
                }
                break;
            default: {  // DQ4J_STEP_REPLACE_ROWS
                const int32_t m = __ldg(st.row_map + row);
                if (m >= 0) {
#pragma unroll
                    for (int j = 0; j < RN; j++) {
                        if (c_base + j < P.cols) {
                            w[i][j] = __ldg(st.values + (size_t)m * P.cols + c_base + j);
                        }
                    }
                }
                break;
            }
        }
    }
}

template <int OUT>
__device__ __forceinline__ void store_tile_as(const MergeParams& P, int r_base, int c_base,
                                              const float (&w)[RM][RN]) {
#pragma unroll
    for (int i = 0; i < RM; i++) {
        const int row = r_base + i;
        if (row >= P.rows) {
            continue;
        }
        const int kl = row * P.cols + c_base;
        if (P.fast_out) {
            if (c_base < P.cols) {
                store8<OUT>(P.out, kl, w[i]);
            }
        } else {
#pragma unroll
            for (int j = 0; j < RN; j++) {
                if (c_base + j < P.cols) {
                    store1<OUT>(P.out, kl + j, w[i][j]);
                }
            }
        }
    }
}

__device__ __forceinline__ void store_tile(const MergeParams& P, int r_base, int c_base, const float (&w)[RM][RN]) {
    switch (P.out_dtype) {
        case DQ4J_F32:
            store_tile_as<DQ4J_F32>(P, r_base, c_base, w);
            break;
        case DQ4J_F16:
            store_tile_as<DQ4J_F16>(P, r_base, c_base, w);
            break;
        default:
            store_tile_as<DQ4J_BF16>(P, r_base, c_base, w);
            break;
    }
}

// w of the micro-tile, parked in shared memory (dynamic, THREADS x 32 floats, thread-minor so that a warp's
// accesses hit 32 banks) while another low-rank step's accumulators need the registers.
__device__ __forceinline__ void park(float* save, const float (&w)[RM][RN]) {
#pragma unroll
    for (int i = 0; i < RM; i++) {
#pragma unroll
        for (int j = 0; j < RN; j++) {
            save[(i * RN + j) * THREADS + threadIdx.x] = w[i][j];
        }
    }
}

__device__ __forceinline__ void unpark(const float* save, float (&w)[RM][RN]) {
#pragma unroll
    for (int i = 0; i < RM; i++) {
#pragma unroll
        for (int j = 0; j < RN; j++) {
            w[i][j] = save[(i * RN + j) * THREADS + threadIdx.x];
        }
    }
}

// Sums of squares in double (as the oracle), per row (into partials[row][col tile]) or per column (into
// partials[row tile][col]). The summation order is a fixed tree, not the oracle's index order, which may move a
// norm by a double ulp.
__device__ __forceinline__ void row_partials(const MergeParams& P, int tr, int tc, int r_base, int c_base,
                                             const float (&w)[RM][RN], Tile& sm) {
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    double sq[RM];
#pragma unroll
    for (int i = 0; i < RM; i++) {
        sq[i] = 0.0;
#pragma unroll
        for (int j = 0; j < RN; j++) {
            if (r_base + i < P.rows && c_base + j < P.cols) {
                const double x = (double)w[i][j];
                sq[i] = __dadd_rn(sq[i], __dmul_rn(x, x));
            }
        }
        sq[i] = __dadd_rn(sq[i], __shfl_xor_sync(FULL_MASK, sq[i], 1));
        sq[i] = __dadd_rn(sq[i], __shfl_xor_sync(FULL_MASK, sq[i], 2));
    }
    double* red = reinterpret_cast<double*>(&sm.R[0][0]);  // [warp][tile row]
    __syncthreads();  // the last k-slice is no longer read
    if ((lane & 3) == 0) {
#pragma unroll
        for (int i = 0; i < RM; i++) {
            red[(tid >> 5) * TM + (lane >> 2) * RM + i] = sq[i];
        }
    }
    __syncthreads();
    if (tid < TM) {
        double s = red[tid];
#pragma unroll
        for (int wp = 1; wp < THREADS / 32; wp++) {
            s = __dadd_rn(s, red[wp * TM + tid]);
        }
        const int row = tr * TM + tid;
        if (row < P.rows) {
            P.partials[(size_t)row * ((P.cols + TN - 1) / TN) + tc] = s;
        }
    }
}

__device__ __forceinline__ void col_partials(const MergeParams& P, int tr, int r_base, int c_base,
                                             const float (&w)[RM][RN]) {
    const int lane = threadIdx.x & 31;
    double sq[RN];
#pragma unroll
    for (int j = 0; j < RN; j++) {
        sq[j] = 0.0;
#pragma unroll
        for (int i = 0; i < RM; i++) {
            if (r_base + i < P.rows && c_base + j < P.cols) {
                const double x = (double)w[i][j];
                sq[j] = __dadd_rn(sq[j], __dmul_rn(x, x));
            }
        }
        sq[j] = __dadd_rn(sq[j], __shfl_xor_sync(FULL_MASK, sq[j], 4));
        sq[j] = __dadd_rn(sq[j], __shfl_xor_sync(FULL_MASK, sq[j], 8));
        sq[j] = __dadd_rn(sq[j], __shfl_xor_sync(FULL_MASK, sq[j], 16));
    }
    if (lane < 4) {
#pragma unroll
        for (int j = 0; j < RN; j++) {
            if (c_base + j < P.cols) {
                P.partials[(size_t)tr * P.cols + c_base + j] = sq[j];
            }
        }
    }
}

template <bool FMA, bool FOURBIT>
__global__ void __launch_bounds__(THREADS, 2) k_merge(const __grid_constant__ MergeParams P) {
    __shared__ __align__(16) Tile sm;
    __shared__ float lut[16];
    extern __shared__ float save[];
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    if (tid < 16) {
        lut[tid] = P.src.code[tid];
    }
    __syncthreads();
    const int col_tiles = (P.cols + TN - 1) / TN;
    const int tiles = (P.rows + TM - 1) / TM * col_tiles;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int tr = t / col_tiles;
        const int tc = t % col_tiles;
        const int r_base = tr * TM + (lane >> 2) * RM;
        const int c_base = tc * TN + (tid >> 5) * 32 + (lane & 3) * RN;
        float w[RM][RN];
        bool have_w = false;
        for (int si = 0; si < P.nsteps; si++) {
            const Step& st = P.steps[si];
            float acc[RM][RN];
            if (is_lowrank(st.kind)) {
                // Parking unconditionally is what frees w's registers during the k-loop (P.save_w, which sized
                // `save`, is set whenever this can happen).
                if (have_w) {
                    park(save, w);
                }
                lowrank<FMA>(P, st, tr, tc, sm, acc);
                if (have_w) {
                    unpark(save, w);
                }
            }
            // The base is loaded after the first delta, so that w is not live during that k-loop.
            if (!have_w) {
                load_base<FOURBIT>(P, lut, r_base, c_base, w);
                have_w = true;
            }
            apply_step(P, st, r_base, c_base, acc, w, P.mode != MODE_APPLY && si == P.nsteps - 1);
        }
        if (!have_w) {
            load_base<FOURBIT>(P, lut, r_base, c_base, w);
        }
        if (P.mode == MODE_APPLY) {
            store_tile(P, r_base, c_base, w);
        } else if (P.mode == MODE_NORM_ROW) {
            row_partials(P, tr, tc, r_base, c_base, w, sm);
        } else {
            col_partials(P, tr, r_base, c_base, w);
        }
    }
}

template <bool FMA, bool FOURBIT>
int32_t launch_kernel(const MergeParams& P, cudaStream_t stream) {
    const int64_t tiles = (int64_t)((P.rows + TM - 1) / TM) * ((P.cols + TN - 1) / TN);
    const size_t dynamic = P.save_w ? sizeof(float) * THREADS * RM * RN : 0;
    if (dynamic > 0) {
        // Static plus dynamic shared memory goes past the default 48 KB: opt in.
        cudaError_t e = cudaFuncSetAttribute(k_merge<FMA, FOURBIT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)dynamic);
        if (e != cudaSuccess) {
            return (int32_t)e;
        }
    }
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_merge<FMA, FOURBIT>, THREADS, dynamic)
        != cudaSuccess) {
        per_sm = 1;
    }
    const int grid = grid_for(tiles * THREADS, THREADS, per_sm);
    k_merge<FMA, FOURBIT><<<grid, THREADS, dynamic, stream>>>(P);
    return launch_result();
}

int32_t launch_merge(const MergeParams& P, bool fma, cudaStream_t stream) {
    const bool fourbit = P.src.kind == DQ4J_SRC_4BIT;
    if (fma) {
        return fourbit ? launch_kernel<true, true>(P, stream) : launch_kernel<true, false>(P, stream);
    }
    return fourbit ? launch_kernel<false, true>(P, stream) : launch_kernel<false, false>(P, stream);
}

int32_t check_steps(const dq4j_step* steps, int32_t nsteps, int32_t applied) {
    if (nsteps < 0) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    if (nsteps > DQ4J_MAX_STEPS) {
        return DQ4J_ERR_TOO_MANY_STEPS;
    }
    if (nsteps > 0 && steps == nullptr) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < nsteps; i++) {
        const dq4j_step& s = steps[i];
        switch (s.kind) {
            case DQ4J_STEP_LORA:
            case DQ4J_STEP_DORA_ROW:
            case DQ4J_STEP_DORA_COL:
                if (s.r < 1 || s.left == nullptr || s.right == nullptr
                    || (s.kind != DQ4J_STEP_LORA && i < applied && s.factor == nullptr)) {
                    return DQ4J_ERR_INVALID_ARGUMENT;
                }
                break;
            case DQ4J_STEP_ADD_SCALED:
                if (s.values == nullptr) {
                    return DQ4J_ERR_INVALID_ARGUMENT;
                }
                break;
            case DQ4J_STEP_REPLACE_ROWS:
                if (s.values == nullptr || s.row_map == nullptr) {
                    return DQ4J_ERR_INVALID_ARGUMENT;
                }
                break;
            default:
                return DQ4J_ERR_INVALID_ARGUMENT;
        }
    }
    return DQ4J_OK;
}

// Checks what the apply and norm passes share and fills the parameter block with chunk-relative pointers.
int32_t prepare(MergeParams& P, const dq4j_source* src, int64_t row0, int64_t rows, int64_t cols,
                const dq4j_step* steps, int32_t nsteps, int32_t flags, const void* out) {
    int32_t rc = check_source(src);
    if (rc != DQ4J_OK) {
        return rc;
    }
    if (row0 < 0 || rows < 0 || cols < 1 || cols > MAX_ELEMENTS || rows > MAX_ELEMENTS / cols
        || (flags & ~DQ4J_MERGE_FMA) != 0 || out == nullptr || row0 > INT64_MAX / cols
        || src->elem0 != row0 * cols || (src->kind == DQ4J_SRC_INT8 && src->cols != cols)) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < nsteps; i++) {
        // left is indexed row * r and right k * cols in 32 bits within a launch.
        if (is_lowrank(steps[i].kind) && (steps[i].r > MAX_ELEMENTS / cols || rows > INT32_MAX / steps[i].r
                                          || row0 > INT64_MAX / steps[i].r)) {
            return DQ4J_ERR_INVALID_ARGUMENT;
        }
    }
    Source& s = P.src;
    s.kind = src->kind;
    s.dtype = src->dtype;
    s.nested = src->nested;
    s.shift = src->kind == DQ4J_SRC_4BIT ? src->block_shift : 0;
    s.e_phase = (int32_t)(src->elem0 & 1);
    s.b_phase = (int32_t)(src->elem0 & ((int64_t(1) << s.shift) - 1));
    s.n_phase = (int32_t)((src->elem0 >> s.shift) & 255);
    s.data = src->data;
    s.absmax = src->absmax;
    s.absmax_code = src->absmax_code;
    s.nested_map = src->nested_map;
    s.nested_absmax = src->nested_absmax;
    s.scb = src->scb;
    s.nested_offset = src->nested_offset;
    for (int i = 0; i < 16; i++) {
        s.code[i] = src->code[i];
    }
    P.save_w = 0;
    for (int32_t i = 0; i < nsteps; i++) {
        const dq4j_step& in = steps[i];
        Step& st = P.steps[i];
        st.kind = in.kind;
        st.r = in.r;
        st.scale = in.scale;
        st.right_vec = cols % 4 == 0 && in.right != nullptr && aligned16(in.right);
        st.left = in.left != nullptr ? in.left + row0 * in.r : nullptr;
        st.right = in.right;
        st.factor = in.factor != nullptr && in.kind == DQ4J_STEP_DORA_ROW ? in.factor + row0 : in.factor;
        st.values = in.values != nullptr && in.kind == DQ4J_STEP_ADD_SCALED ? in.values + row0 * cols : in.values;
        st.row_map = in.row_map != nullptr ? in.row_map + row0 : nullptr;
        if (i > 0 && is_lowrank(in.kind)) {
            P.save_w = 1;
        }
    }
    P.rows = (int32_t)rows;
    P.cols = (int32_t)cols;
    P.nsteps = nsteps;
    P.fast_in = src->kind == DQ4J_SRC_4BIT && cols % 8 == 0 && aligned16(src->data);
    P.fast_out = cols % 8 == 0 && aligned16(out);
    P.mode = MODE_APPLY;
    P.out_dtype = DQ4J_F32;
    P.out = nullptr;
    P.partials = nullptr;
    return DQ4J_OK;
}

}  // namespace
}  // namespace dq4j

extern "C" {

int32_t dq4j_merge(const dq4j_source* src, int64_t row0, int64_t rows, int64_t cols, const dq4j_step* steps,
                   int32_t nsteps, int32_t flags, int32_t out_dtype, void* out, void* stream) {
    using namespace dq4j;
    int32_t rc = check_steps(steps, nsteps, nsteps);
    if (rc != DQ4J_OK) {
        return rc;
    }
    MergeParams P;
    rc = prepare(P, src, row0, rows, cols, steps, nsteps, flags, out);
    if (rc != DQ4J_OK) {
        return rc;
    }
    if (!out_dtype_ok(out_dtype)) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    if (!aligned16(out)) {
        return DQ4J_ERR_MISALIGNED;
    }
    if (rows == 0) {
        return DQ4J_OK;
    }
    P.out = out;
    P.out_dtype = out_dtype;
    return launch_merge(P, (flags & DQ4J_MERGE_FMA) != 0, static_cast<cudaStream_t>(stream));
}

int32_t dq4j_dora_norms(const dq4j_source* src, int64_t row0, int64_t rows, int64_t cols, const dq4j_step* steps,
                        int32_t nsteps, int32_t step, int32_t flags, double* partials, void* stream) {
    using namespace dq4j;
    int32_t rc = check_steps(steps, nsteps, step);
    if (rc != DQ4J_OK) {
        return rc;
    }
    if (step < 0 || step >= nsteps
        || (steps[step].kind != DQ4J_STEP_DORA_ROW && steps[step].kind != DQ4J_STEP_DORA_COL)) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    MergeParams P;
    rc = prepare(P, src, row0, rows, cols, steps, step + 1, flags, partials);
    if (rc != DQ4J_OK) {
        return rc;
    }
    if ((reinterpret_cast<uintptr_t>(partials) & 7u) != 0) {
        return DQ4J_ERR_MISALIGNED;
    }
    if (rows == 0) {
        return DQ4J_OK;
    }
    P.partials = partials;
    P.mode = steps[step].kind == DQ4J_STEP_DORA_ROW ? MODE_NORM_ROW : MODE_NORM_COL;
    return launch_merge(P, (flags & DQ4J_MERGE_FMA) != 0, static_cast<cudaStream_t>(stream));
}

}  // extern "C"
