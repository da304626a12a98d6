// CPU registrations: the device-independent frontends (common/frontend.h) with the CPU
// kernels chosen for the running processor (cpu/kernels.h).
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common/frontend.h"
#include "kernels.h"

namespace dgm_ext::cpu {

struct CpuBackend {
  static constexpr bool kAllowHalf = false;

  template <class F>
  static void dispatch(at::ScalarType st, const char* op, F f) {
    switch (st) {
      case at::kFloat:
        f(static_cast<float*>(nullptr));
        break;
      case at::kDouble:
        f(static_cast<double*>(nullptr));
        break;
      default:
        TORCH_CHECK_TYPE(false, "dgm_ext.", op, ": unsupported dtype ", st, " on CPU");
    }
  }

  static void before_launch(const at::Tensor&) {}

#define DGM_CPU_LAUNCH(name, P) \
  template <class T>            \
  static void name(const P<T>& p) { kernels_for<T>().name(p); }
  DGM_CPU_KERNELS(DGM_CPU_LAUNCH)
#undef DGM_CPU_LAUNCH
};

TORCH_LIBRARY_IMPL(dgm_ext, CPU, m) {
  namespace fe = dgm_ext::frontend;
  m.impl("bernoulli_log_prob", &fe::bernoulli_log_prob<CpuBackend>);
  m.impl("bernoulli_log_prob_backward", &fe::bernoulli_log_prob_backward<CpuBackend>);
  m.impl("gaussian_log_prob", &fe::gaussian_log_prob<CpuBackend>);
  m.impl("gaussian_log_prob_backward", &fe::gaussian_log_prob_backward<CpuBackend>);
  m.impl("beta_log_prob", &fe::beta_log_prob<CpuBackend>);
  m.impl("beta_log_prob_backward", &fe::beta_log_prob_backward<CpuBackend>);
  m.impl("categorical_log_prob", &fe::categorical_log_prob<CpuBackend>);
  m.impl("categorical_log_prob_backward", &fe::categorical_log_prob_backward<CpuBackend>);
  m.impl("kl_normal_std", &fe::kl_normal_std<CpuBackend>);
  m.impl("kl_normal_std_backward", &fe::kl_normal_std_backward<CpuBackend>);
  m.impl("kl_normal", &fe::kl_normal<CpuBackend>);
  m.impl("kl_normal_backward", &fe::kl_normal_backward<CpuBackend>);
  m.impl("reparameterize", &fe::reparameterize<CpuBackend>);
  m.impl("reparameterize_backward", &fe::reparameterize_backward<CpuBackend>);
  m.impl("affine_coupling", &fe::affine_coupling<CpuBackend>);
  m.impl("affine_coupling_backward", &fe::affine_coupling_backward<CpuBackend>);
  m.impl("planar_flow", &fe::planar_flow<CpuBackend>);
  m.impl("planar_flow_backward", &fe::planar_flow_backward<CpuBackend>);
}

}  // namespace dgm_ext::cpu
