// KL divergences between diagonal Gaussians: CUDA kernels.
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

struct KlStdFwd {
  template <typename A>
  __device__ A operator()(A, const A* v, A*) const {
    return math::kl_std(v[0], v[1]);
  }
};

struct KlStdBwd {
  template <typename A>
  __device__ A operator()(A g, const A* v, A* o) const {
    math::kl_std_grad(v[0], v[1], g, o[0], o[1]);
    return A(0);
  }
};

struct KlNormalFwd {
  template <typename A>
  __device__ A operator()(A, const A* v, A*) const {
    return math::kl_normal(v[0], v[1], v[2], v[3]);
  }
};

struct KlNormalBwd {
  template <typename A>
  __device__ A operator()(A g, const A* v, A* o) const {
    math::kl_normal_grad(v[0], v[1], v[2], v[3], g, o[0], o[1], o[2], o[3]);
    return A(0);
  }
};

template <typename T>
void kl_std_fwd_impl(const KlStdParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 2, 0> a{p.layout, {p.mu, p.logvar}};
  a.row_out = p.out;
  launch_rows(a, KlStdFwd{}, stream);
}

template <typename T>
void kl_std_bwd_impl(const KlStdParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 2, 2> a{p.layout, {p.mu, p.logvar}, {p.grad_mu, p.grad_logvar}};
  a.row_in = p.grad;
  launch_rows(a, KlStdBwd{}, stream);
}

template <typename T>
void kl_normal_fwd_impl(const KlNormalParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 4, 0> a{p.layout, {p.mu_q, p.logvar_q, p.mu_p, p.logvar_p}};
  a.row_out = p.out;
  launch_rows(a, KlNormalFwd{}, stream);
}

template <typename T>
void kl_normal_bwd_impl(const KlNormalParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 4, 4> a{p.layout,
                     {p.mu_q, p.logvar_q, p.mu_p, p.logvar_p},
                     {p.grad_mu_q, p.grad_logvar_q, p.grad_mu_p, p.grad_logvar_p}};
  a.row_in = p.grad;
  launch_rows(a, KlNormalBwd{}, stream);
}

}  // namespace

DGM_CUDA_INSTANTIATE(kl_std_fwd, KlStdParams)
DGM_CUDA_INSTANTIATE(kl_std_bwd, KlStdParams)
DGM_CUDA_INSTANTIATE(kl_normal_fwd, KlNormalParams)
DGM_CUDA_INSTANTIATE(kl_normal_bwd, KlNormalParams)

}  // namespace dgm_ext::cuda
