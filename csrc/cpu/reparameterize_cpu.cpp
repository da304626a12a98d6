// Reparameterisation z = mu + exp(logvar / 2) * eps: CPU kernels.
#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
void reparam_fwd_impl(const ReparamParams<T>& p) {
  row_loop<T, 3, 1>(p.layout, {p.mu, p.logvar, p.eps}, nullptr, nullptr, {p.z},
                    [](auto, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      return Lanes<V, 1>{{math::reparam(v[0], v[1], v[2])}, V(0)};
                    });
}

template <typename T>
void reparam_bwd_impl(const ReparamParams<T>& p) {
  // mu is not needed by the gradient formulas: its slot stays null so it is never read.
  row_loop<T, 4, 3>(p.layout, {nullptr, p.logvar, p.eps, p.grad}, nullptr, nullptr,
                    {p.grad_mu, p.grad_logvar, p.grad_eps}, [](auto, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V gm, glv, ge;
                      math::reparam_grad(v[1], v[2], v[3], gm, glv, ge);
                      return Lanes<V, 3>{{gm, glv, ge}, V(0)};
                    });
}

DGM_INSTANTIATE(reparam_fwd, ReparamParams)
DGM_INSTANTIATE(reparam_bwd, ReparamParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
