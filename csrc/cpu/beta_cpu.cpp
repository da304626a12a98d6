// Beta log-density: CPU kernels.
#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
void beta_fwd_impl(const BetaParams<T>& p) {
  const T eps = static_cast<T>(p.eps);
  row_loop<T, 3, 0>(p.layout, {p.x, p.alpha, p.beta}, nullptr, p.out, {},
                    [eps](auto, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      return Lanes<V, 0>{{}, math::beta_logp(v[0], v[1], v[2], V(eps))};
                    });
}

template <typename T>
void beta_bwd_impl(const BetaParams<T>& p) {
  const T eps = static_cast<T>(p.eps);
  row_loop<T, 3, 3>(p.layout, {p.x, p.alpha, p.beta}, p.grad, nullptr,
                    {p.grad_x, p.grad_alpha, p.grad_beta}, [eps](auto g, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V gx, ga, gb;
                      math::beta_grad(v[0], v[1], v[2], V(eps), g, gx, ga, gb);
                      return Lanes<V, 3>{{gx, ga, gb}, V(0)};
                    });
}

DGM_INSTANTIATE(beta_fwd, BetaParams)
DGM_INSTANTIATE(beta_bwd, BetaParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
