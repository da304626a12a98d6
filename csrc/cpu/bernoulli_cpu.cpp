// Bernoulli log-likelihood: CPU kernels (forward and backward).
#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
void bernoulli_fwd_impl(const BernoulliParams<T>& p) {
  row_loop<T, 2, 0>(p.layout, {p.logits, p.x}, nullptr, p.out, {}, [](auto, const auto& v) {
    using V = std::decay_t<decltype(v[0])>;
    return Lanes<V, 0>{{}, math::bernoulli_logp(v[0], v[1])};
  });
}

template <typename T>
void bernoulli_bwd_impl(const BernoulliParams<T>& p) {
  row_loop<T, 2, 2>(p.layout, {p.logits, p.x}, p.grad, nullptr, {p.grad_logits, p.grad_x},
                    [](auto g, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V gl, gx;
                      math::bernoulli_grad(v[0], v[1], g, gl, gx);
                      return Lanes<V, 2>{{gl, gx}, V(0)};
                    });
}

DGM_INSTANTIATE(bernoulli_fwd, BernoulliParams)
DGM_INSTANTIATE(bernoulli_bwd, BernoulliParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
