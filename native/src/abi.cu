// The host-only part of the ABI: version, sizes, error strings, argument checks and launch sizing.
#include <math.h>

#include "common.cuh"

namespace dq4j {

int32_t check_source(const dq4j_source* s) {
    if (s == nullptr || s->data == nullptr || s->elem0 < 0) {
        return DQ4J_ERR_INVALID_ARGUMENT;
    }
    switch (s->kind) {
        case DQ4J_SRC_4BIT:
            if (s->block_shift < 5 || s->block_shift > 12) {
                return DQ4J_ERR_INVALID_ARGUMENT;
            }
            if (s->nested == 1) {
                if (s->absmax_code == nullptr || s->nested_map == nullptr || s->nested_absmax == nullptr) {
                    return DQ4J_ERR_INVALID_ARGUMENT;
                }
            } else if (s->nested != 0 || s->absmax == nullptr) {
                return DQ4J_ERR_INVALID_ARGUMENT;
            }
            return DQ4J_OK;
        case DQ4J_SRC_INT8:
            return s->scb != nullptr && s->cols > 0 ? DQ4J_OK : DQ4J_ERR_INVALID_ARGUMENT;
        case DQ4J_SRC_PLAIN:
            return s->dtype == DQ4J_F32 || s->dtype == DQ4J_F16 || s->dtype == DQ4J_BF16 || s->dtype == DQ4J_F64
                   ? DQ4J_OK : DQ4J_ERR_INVALID_ARGUMENT;
        default:
            return DQ4J_ERR_INVALID_ARGUMENT;
    }
}

int grid_for(int64_t work_items, int threads, int per_sm) {
    // The last error is per host thread and outlives the call that set it: a failed cudaMalloc or cudaHostAlloc
    // of the caller, or the occupancy query before this, would otherwise be reported as this launch's failure.
    // Sticky errors (a faulted context) stay: the launch fails with them again.
    (void)cudaGetLastError();
    int device = 0;
    int sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        // The launch that follows reports the error (cudaGetLastError keeps it).
        return 1;
    }
    int64_t needed = (work_items + threads - 1) / threads;
    int64_t cap = (int64_t)sms * (per_sm > 0 ? per_sm : 1);
    int64_t blocks = needed < cap ? needed : cap;
    return blocks > 0 ? (int)blocks : 1;
}

int32_t launch_result() {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? DQ4J_OK : (int32_t)e;
}

}  // namespace dq4j

extern "C" {

int32_t dq4j_abi_version(void) { return DQ4J_ABI_VERSION; }

int64_t dq4j_sizeof_source(void) { return (int64_t)sizeof(dq4j_source); }

int64_t dq4j_sizeof_step(void) { return (int64_t)sizeof(dq4j_step); }

const char* dq4j_error_string(int32_t code) {
    switch (code) {
        case DQ4J_OK:
            return "ok";
        case DQ4J_ERR_INVALID_ARGUMENT:
            return "invalid argument (null pointer, negative size, unknown kind or dtype)";
        case DQ4J_ERR_MISALIGNED:
            return "misaligned pointer or element offset";
        case DQ4J_ERR_TOO_MANY_STEPS:
            return "more merge steps than DQ4J_MAX_STEPS";
        default:
            return code > 0 ? cudaGetErrorString((cudaError_t)code) : "unknown dequant4j error";
    }
}

}  // extern "C"
