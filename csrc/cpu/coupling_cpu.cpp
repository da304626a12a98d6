// Affine coupling (RealNVP) with its log-determinant: CPU kernels.
#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
void coupling_fwd_impl(const CouplingParams<T>& p) {
  const bool reverse = p.reverse;
  row_loop<T, 4, 1>(p.layout, {p.x, p.s, p.t, p.mask}, nullptr, p.logdet, {p.y},
                    [reverse](auto, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V ld;
                      const V y = math::coupling(v[0], v[1], v[2], v[3], reverse, ld);
                      return Lanes<V, 1>{{y}, ld};
                    });
}

template <typename T>
void coupling_bwd_impl(const CouplingParams<T>& p) {
  const bool reverse = p.reverse;
  row_loop<T, 5, 3>(p.layout, {p.x, p.s, p.t, p.mask, p.grad_y}, p.grad_logdet, nullptr,
                    {p.grad_x, p.grad_s, p.grad_t}, [reverse](auto g_ld, const auto& v) {
                      using V = std::decay_t<decltype(v[0])>;
                      V gx, gs, gt;
                      math::coupling_grad(v[0], v[1], v[2], v[3], reverse, v[4], g_ld, gx, gs,
                                          gt);
                      return Lanes<V, 3>{{gx, gs, gt}, V(0)};
                    });
}

DGM_INSTANTIATE(coupling_fwd, CouplingParams)
DGM_INSTANTIATE(coupling_bwd, CouplingParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
