# Target GPUs, decided before project() enables CUDA: after that CMake has already settled on nvcc's default
# (sm_75 with CUDA 13). SASS for Ampere (sm_80, sm_86), Ada (sm_89) and Hopper (sm_90), plus compute_90 PTX so that
# newer GPUs can JIT the kernels (the PTX comes from the oldest CUDA 13 we build with, which every r580+ driver
# accepts). Override with -DCMAKE_CUDA_ARCHITECTURES=... for a quicker single-GPU build.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80-real;86-real;89-real;90" CACHE STRING "CUDA architectures to build for")
endif()

# The CUDA runtime is linked as a shared library: the JavaCPP CUDA presets load libcudart.so.13 too, and both must
# share one runtime (one context, one set of streams and allocations).
set(CMAKE_CUDA_RUNTIME_LIBRARY Shared CACHE STRING "How to link the CUDA runtime")
