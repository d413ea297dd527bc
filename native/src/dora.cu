// DoRA norms to factors: small kernels over the per-tile partial sums that dq4j_dora_norms writes. Each output
// sums its partials in a fixed order, so results do not depend on scheduling.
#include "common.cuh"

namespace dq4j {
namespace {

constexpr int THREADS = 256;

// The oracle: factor = magnitude / (float) Math.sqrt(sum), a correctly rounded double sqrt, then RNE to float.
__device__ __forceinline__ float factor_of(float magnitude, double sum) {
    return __fdiv_rn(magnitude, __double2float_rn(__dsqrt_rn(sum)));
}

__global__ void __launch_bounds__(THREADS) k_row_factors(const double* __restrict__ partials, int64_t rows,
                                                           int64_t col_tiles, const float* __restrict__ magnitude,
                                                           float* __restrict__ factor) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += (int64_t)gridDim.x * blockDim.x) {
        double s = 0.0;
        for (int64_t t = 0; t < col_tiles; t++) {
            s = __dadd_rn(s, partials[i * col_tiles + t]);
        }
        factor[i] = factor_of(magnitude[i], s);
    }
}

__global__ void __launch_bounds__(THREADS) k_col_accumulate(const double* __restrict__ partials, int64_t row_tiles,
                                                              int64_t cols, double* __restrict__ col_sums) {
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
        double s = col_sums[c];
        for (int64_t t = 0; t < row_tiles; t++) {
            s = __dadd_rn(s, partials[t * cols + c]);
        }
        col_sums[c] = s;
    }
}

__global__ void __launch_bounds__(THREADS) k_col_factors(const double* __restrict__ col_sums, int64_t cols,
                                                           const float* __restrict__ magnitude,
                                                           float* __restrict__ factor) {
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x) {
        factor[c] = factor_of(magnitude[c], col_sums[c]);
    }
}

}  // namespace
}  // namespace dq4j

extern "C" {

int32_t dq4j_dora_row_factors(const double* partials, int64_t rows, int64_t col_tiles, const float* magnitude,
                              float* factor, void* stream) {
    using namespace dq4j;
    if (partials == nullptr || magnitude == nullptr || factor == nullptr || rows < 0 || col_tiles < 1) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    if (rows == 0) {
        return DQ4J_OK;
    }
    k_row_factors<<<grid_for(rows, THREADS, 4), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
            partials, rows, col_tiles, magnitude, factor);
    return launch_result();
}

int32_t dq4j_dora_col_accumulate(const double* partials, int64_t row_tiles, int64_t cols, double* col_sums,
                                 void* stream) {
    using namespace dq4j;
    if (partials == nullptr || col_sums == nullptr || row_tiles < 0 || cols < 1) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    if (row_tiles == 0) {
        return DQ4J_OK;
    }
    k_col_accumulate<<<grid_for(cols, THREADS, 4), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
            partials, row_tiles, cols, col_sums);
    return launch_result();
}

int32_t dq4j_dora_col_factors(const double* col_sums, int64_t cols, const float* magnitude, float* factor,
                              void* stream) {
    using namespace dq4j;
    if (col_sums == nullptr || magnitude == nullptr || factor == nullptr || cols < 1) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    k_col_factors<<<grid_for(cols, THREADS, 4), THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
            col_sums, cols, magnitude, factor);
    return launch_result();
}

}  // extern "C"
