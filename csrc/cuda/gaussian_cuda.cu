// Diagonal Gaussian log-density: CUDA kernels.
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

struct GaussianFwd {
  template <typename A>
  __device__ A operator()(A, const A* v, A*) const {
    return math::gaussian_logp(v[0], v[1], v[2]);
  }
};

struct GaussianBwd {
  template <typename A>
  __device__ A operator()(A g, const A* v, A* o) const {
    math::gaussian_grad(v[0], v[1], v[2], g, o[0], o[1], o[2]);
    return A(0);
  }
};

template <typename T>
void gaussian_fwd_impl(const GaussianParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 3, 0> a{p.layout, {p.x, p.mean, p.logvar}};
  a.row_out = p.out;
  launch_rows(a, GaussianFwd{}, stream);
}

template <typename T>
void gaussian_bwd_impl(const GaussianParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 3, 3> a{p.layout, {p.x, p.mean, p.logvar}, {p.grad_x, p.grad_mean, p.grad_logvar}};
  a.row_in = p.grad;
  launch_rows(a, GaussianBwd{}, stream);
}

}  // namespace

DGM_CUDA_INSTANTIATE(gaussian_fwd, GaussianParams)
DGM_CUDA_INSTANTIATE(gaussian_bwd, GaussianParams)

}  // namespace dgm_ext::cuda
