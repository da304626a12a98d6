// Portability macros shared by the C++ (CPU) and CUDA translation units.
// This header and everything in include/dgm_ext/ must stay free of torch headers so that
// nvcc can compile the CUDA kernels without torch's CUDA headers.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DGM_HD __host__ __device__ __forceinline__
#define DGM_DEVICE_CODE 1
#else
#define DGM_HD inline
#define DGM_DEVICE_CODE 0
#endif
