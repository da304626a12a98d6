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
        DGM_CHECK_TYPE(false, "dgm_ext.", op, ": unsupported dtype ", st, " on CPU");
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
  dgm_ext::frontend::register_ops<CpuBackend>(m);
}

}  // namespace dgm_ext::cpu
