// The host build's cuda_runtime.h: the toolkit's runtime API declarations (implemented by the stand-in
// libcudart.so.13, native/emu/runtime.cpp) plus the device-side definitions of dq4j_emu.h.
#pragma once

#include "dq4j_emu.h"

template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

template <typename F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F* kernel, int threads,
                                                                 size_t shared) {
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(kernel), threads,
                                                         shared);
}
