// Reparameterisation z = mu + exp(logvar / 2) * eps: CUDA kernels (elementwise, tiled).
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

struct ReparamFwd {
  template <typename A>
  __device__ A operator()(A, const A* v, A* o) const {
    o[0] = math::reparam(v[0], v[1], v[2]);
    return A(0);
  }
};

// Inputs: mu, logvar, eps, grad (the upstream gradient is strided like the inputs).
struct ReparamBwd {
  template <typename A>
  __device__ A operator()(A, const A* v, A* o) const {
    math::reparam_grad(v[1], v[2], v[3], o[0], o[1], o[2]);
    return A(0);
  }
};

template <typename T>
void reparam_fwd_impl(const ReparamParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 3, 1> a{p.layout, {p.mu, p.logvar, p.eps}, {p.z}};
  launch_rows(a, ReparamFwd{}, stream);
}

template <typename T>
void reparam_bwd_impl(const ReparamParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 4, 3> a{p.layout, {p.mu, p.logvar, p.eps, p.grad},
                     {p.grad_mu, p.grad_logvar, p.grad_eps}};
  launch_rows(a, ReparamBwd{}, stream);
}

}  // namespace

DGM_CUDA_INSTANTIATE(reparam_fwd, ReparamParams)
DGM_CUDA_INSTANTIATE(reparam_bwd, ReparamParams)

}  // namespace dgm_ext::cuda
