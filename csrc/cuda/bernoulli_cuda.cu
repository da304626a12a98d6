// Bernoulli log-likelihood: CUDA kernels (forward row sums, fused backward).
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

struct BernoulliFwd {
  template <typename A>
  __device__ A operator()(A, const A* v, A*) const {
    return math::bernoulli_logp(v[0], v[1]);
  }
};

struct BernoulliBwd {
  template <typename A>
  __device__ A operator()(A g, const A* v, A* o) const {
    math::bernoulli_grad(v[0], v[1], g, o[0], o[1]);
    return A(0);
  }
};

template <typename T>
void bernoulli_fwd_impl(const BernoulliParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 2, 0> a{p.layout, {p.logits, p.x}};
  a.row_out = p.out;
  launch_rows(a, BernoulliFwd{}, stream);
}

template <typename T>
void bernoulli_bwd_impl(const BernoulliParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 2, 2> a{p.layout, {p.logits, p.x}, {p.grad_logits, p.grad_x}};
  a.row_in = p.grad;
  launch_rows(a, BernoulliBwd{}, stream);
}

}  // namespace

DGM_CUDA_INSTANTIATE(bernoulli_fwd, BernoulliParams)
DGM_CUDA_INSTANTIATE(bernoulli_bwd, BernoulliParams)

}  // namespace dgm_ext::cuda
