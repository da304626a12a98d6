// The CPU kernels and their per-ISA dispatch table.
//
// Every *_cpu.cpp kernel file is compiled once per instruction set (DEFAULT, AVX2), each time
// with CPU_CAPABILITY naming that ISA, so its functions land in a namespace of their own.
// dispatch.cpp picks the best table the running CPU supports.
#pragma once
#include "dgm_ext/params.h"

namespace dgm_ext::cpu {

// X(name, Params) for every kernel; each exists for float and double.
#define DGM_CPU_KERNELS(X)            \
  X(bernoulli_fwd, BernoulliParams)   \
  X(bernoulli_bwd, BernoulliParams)   \
  X(gaussian_fwd, GaussianParams)     \
  X(gaussian_bwd, GaussianParams)     \
  X(beta_fwd, BetaParams)             \
  X(beta_bwd, BetaParams)             \
  X(categorical_fwd, CategoricalParams) \
  X(categorical_bwd, CategoricalParams) \
  X(kl_std_fwd, KlStdParams)          \
  X(kl_std_bwd, KlStdParams)          \
  X(kl_normal_fwd, KlNormalParams)    \
  X(kl_normal_bwd, KlNormalParams)    \
  X(reparam_fwd, ReparamParams)       \
  X(reparam_bwd, ReparamParams)       \
  X(coupling_fwd, CouplingParams)     \
  X(coupling_bwd, CouplingParams)     \
  X(planar_fwd, PlanarParams)         \
  X(planar_bwd, PlanarParams)         \
  X(planar_rows_fwd, PlanarRowsParams) \
  X(planar_rows_bwd, PlanarRowsParams)

template <typename T>
struct Kernels {
#define DGM_FIELD(name, P) void (*name)(const P<T>&);
  DGM_CPU_KERNELS(DGM_FIELD)
#undef DGM_FIELD
};

struct KernelTable {
  const char* isa;
  Kernels<float> f32;
  Kernels<double> f64;
};

// Declarations of the kernels of one ISA (inside each kernel file's own namespace).
#ifdef CPU_CAPABILITY
inline namespace CPU_CAPABILITY {
#define DGM_DECLARE(name, P) \
  void name(const P<float>&); \
  void name(const P<double>&);
DGM_CPU_KERNELS(DGM_DECLARE)
#undef DGM_DECLARE
const KernelTable& kernel_table();
}  // namespace CPU_CAPABILITY
#endif

// The table for the running CPU (chosen once, at first use).
const KernelTable& kernels();

template <typename T>
const Kernels<T>& kernels_for();
template <>
inline const Kernels<float>& kernels_for<float>() { return kernels().f32; }
template <>
inline const Kernels<double>& kernels_for<double>() { return kernels().f64; }

}  // namespace dgm_ext::cpu
