// Diagonal Gaussian log-density: CPU kernels.
#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
void gaussian_fwd_impl(const GaussianParams<T>& p) {
  row_loop<T, 3, 0>(p.layout, {p.x, p.mean, p.logvar}, nullptr, p.out, {},
                    [](auto, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      return Lanes<V, 0>{{}, math::gaussian_logp(v[0], v[1], v[2])};
                    });
}

template <typename T>
void gaussian_bwd_impl(const GaussianParams<T>& p) {
  row_loop<T, 3, 3>(p.layout, {p.x, p.mean, p.logvar}, p.grad, nullptr,
                    {p.grad_x, p.grad_mean, p.grad_logvar}, [](auto g, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V gx, gm, glv;
                      math::gaussian_grad(v[0], v[1], v[2], g, gx, gm, glv);
                      return Lanes<V, 3>{{gx, gm, glv}, V(0)};
                    });
}

DGM_INSTANTIATE(gaussian_fwd, GaussianParams)
DGM_INSTANTIATE(gaussian_bwd, GaussianParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
