// Beta log-density: CUDA kernels.
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

// eps is rounded to the storage type first, as on the CPU.
struct BetaFwd {
  double eps;
  template <typename A>
  __device__ A operator()(A, const A* v, A*) const {
    return math::beta_logp(v[0], v[1], v[2], A(eps));
  }
};

struct BetaBwd {
  double eps;
  template <typename A>
  __device__ A operator()(A g, const A* v, A* o) const {
    math::beta_grad(v[0], v[1], v[2], A(eps), g, o[0], o[1], o[2]);
    return A(0);
  }
};

template <typename T>
double storage_eps(double eps) {
  return std::is_same<T, double>::value ? eps : double(static_cast<float>(eps));
}

template <typename T>
void beta_fwd_impl(const BetaParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 3, 0> a{p.layout, {p.x, p.alpha, p.beta}};
  a.row_out = p.out;
  launch_rows(a, BetaFwd{storage_eps<T>(p.eps)}, stream);
}

template <typename T>
void beta_bwd_impl(const BetaParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 3, 3> a{p.layout, {p.x, p.alpha, p.beta}, {p.grad_x, p.grad_alpha, p.grad_beta}};
  a.row_in = p.grad;
  launch_rows(a, BetaBwd{storage_eps<T>(p.eps)}, stream);
}

}  // namespace

DGM_CUDA_INSTANTIATE(beta_fwd, BetaParams)
DGM_CUDA_INSTANTIATE(beta_bwd, BetaParams)

}  // namespace dgm_ext::cuda
