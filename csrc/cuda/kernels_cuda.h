// Host-side declarations of the CUDA kernel launchers. Torch-free (see macros.h): included by
// the .cu kernel files and by bindings_cuda.cpp, which maps torch dtypes onto the storage
// types below (at::Half -> __half, at::BFloat16 -> __nv_bfloat16).
//
// Every launcher enqueues its kernels on `stream` and returns without synchronising; errors
// surface through cudaGetLastError() (the binding calls C10_CUDA_KERNEL_LAUNCH_CHECK()).
// Storage types: float, double, __half, __nv_bfloat16; half/bf16 are computed in float.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "dgm_ext/params.h"

namespace dgm_ext::cuda {

// X(name, Params) for every launcher with the plain signature (params, stream).
#define DGM_CUDA_KERNELS(X)             \
  X(bernoulli_fwd, BernoulliParams)     \
  X(bernoulli_bwd, BernoulliParams)     \
  X(gaussian_fwd, GaussianParams)       \
  X(gaussian_bwd, GaussianParams)       \
  X(beta_fwd, BetaParams)               \
  X(beta_bwd, BetaParams)               \
  X(categorical_fwd, CategoricalParams) \
  X(categorical_bwd, CategoricalParams) \
  X(kl_std_fwd, KlStdParams)            \
  X(kl_std_bwd, KlStdParams)            \
  X(kl_normal_fwd, KlNormalParams)      \
  X(kl_normal_bwd, KlNormalParams)      \
  X(reparam_fwd, ReparamParams)         \
  X(reparam_bwd, ReparamParams)         \
  X(coupling_fwd, CouplingParams)       \
  X(coupling_bwd, CouplingParams)

#define DGM_CUDA_FOR_EACH_STORAGE(X, ...) \
  X(float, __VA_ARGS__)                   \
  X(double, __VA_ARGS__)                  \
  X(__half, __VA_ARGS__)                  \
  X(__nv_bfloat16, __VA_ARGS__)

#define DGM_CUDA_DECLARE_ONE(T, name, P) void name(const P<T>& p, cudaStream_t stream);
#define DGM_CUDA_DECLARE(name, P) DGM_CUDA_FOR_EACH_STORAGE(DGM_CUDA_DECLARE_ONE, name, P)
DGM_CUDA_KERNELS(DGM_CUDA_DECLARE)
#undef DGM_CUDA_DECLARE

// Planar flow: the launchers need a device workspace of planar_{fwd,bwd}_workspace(p) bytes
// (allocated by the caller on the stream's device; 256-byte aligned). The kernels keep a row
// of z in registers, so the dimension d is limited to kPlanarMaxDim.
constexpr int64_t kPlanarMaxDim = 1024;
#define DGM_CUDA_DECLARE_PLANAR(T, unused)                                            \
  size_t planar_fwd_workspace(const PlanarParams<T>& p);                              \
  size_t planar_bwd_workspace(const PlanarParams<T>& p);                              \
  void planar_fwd(const PlanarParams<T>& p, void* workspace, cudaStream_t stream);    \
  void planar_bwd(const PlanarParams<T>& p, void* workspace, cudaStream_t stream);
DGM_CUDA_FOR_EACH_STORAGE(DGM_CUDA_DECLARE_PLANAR, 0)
#undef DGM_CUDA_DECLARE_PLANAR

// Planar flow with per-row parameters: same contract (workspace, d <= kPlanarMaxDim).
#define DGM_CUDA_DECLARE_PLANAR_ROWS(T, unused)                                            \
  size_t planar_rows_fwd_workspace(const PlanarRowsParams<T>& p);                          \
  size_t planar_rows_bwd_workspace(const PlanarRowsParams<T>& p);                          \
  void planar_rows_fwd(const PlanarRowsParams<T>& p, void* workspace, cudaStream_t stream); \
  void planar_rows_bwd(const PlanarRowsParams<T>& p, void* workspace, cudaStream_t stream);
DGM_CUDA_FOR_EACH_STORAGE(DGM_CUDA_DECLARE_PLANAR_ROWS, 0)
#undef DGM_CUDA_DECLARE_PLANAR_ROWS
#undef DGM_CUDA_DECLARE_ONE

}  // namespace dgm_ext::cuda
