// KL divergences between diagonal Gaussians: CPU kernels.
#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
void kl_std_fwd_impl(const KlStdParams<T>& p) {
  row_loop<T, 2, 0>(p.layout, {p.mu, p.logvar}, nullptr, p.out, {}, [](auto, const auto& v) {
    using V = std::decay_t<decltype(v[0])>;
    return Lanes<V, 0>{{}, math::kl_std(v[0], v[1])};
  });
}

template <typename T>
void kl_std_bwd_impl(const KlStdParams<T>& p) {
  row_loop<T, 2, 2>(p.layout, {p.mu, p.logvar}, p.grad, nullptr, {p.grad_mu, p.grad_logvar},
                    [](auto g, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V gm, glv;
                      math::kl_std_grad(v[0], v[1], g, gm, glv);
                      return Lanes<V, 2>{{gm, glv}, V(0)};
                    });
}

template <typename T>
void kl_normal_fwd_impl(const KlNormalParams<T>& p) {
  row_loop<T, 4, 0>(p.layout, {p.mu_q, p.logvar_q, p.mu_p, p.logvar_p}, nullptr, p.out, {},
                    [](auto, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      return Lanes<V, 0>{{}, math::kl_normal(v[0], v[1], v[2], v[3])};
                    });
}

template <typename T>
void kl_normal_bwd_impl(const KlNormalParams<T>& p) {
  row_loop<T, 4, 4>(p.layout, {p.mu_q, p.logvar_q, p.mu_p, p.logvar_p}, p.grad, nullptr,
                    {p.grad_mu_q, p.grad_logvar_q, p.grad_mu_p, p.grad_logvar_p},
                    [](auto g, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V a, b, c, d;
                      math::kl_normal_grad(v[0], v[1], v[2], v[3], g, a, b, c, d);
                      return Lanes<V, 4>{{a, b, c, d}, V(0)};
                    });
}

DGM_INSTANTIATE(kl_std_fwd, KlStdParams)
DGM_INSTANTIATE(kl_std_bwd, KlStdParams)
DGM_INSTANTIATE(kl_normal_fwd, KlNormalParams)
DGM_INSTANTIATE(kl_normal_bwd, KlNormalParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
