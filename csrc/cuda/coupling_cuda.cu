// Affine coupling (RealNVP) with its log-determinant: CUDA kernels.
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

// Inputs: x, s, t, mask. Output y; the row term is the log-det contribution.
struct CouplingFwd {
  bool reverse;
  template <typename A>
  __device__ A operator()(A, const A* v, A* o) const {
    A ld;
    o[0] = math::coupling(v[0], v[1], v[2], v[3], reverse, ld);
    return ld;
  }
};

// Inputs: x, s, t, mask, grad_y; the row value is grad_logdet.
struct CouplingBwd {
  bool reverse;
  template <typename A>
  __device__ A operator()(A g_ld, const A* v, A* o) const {
    math::coupling_grad(v[0], v[1], v[2], v[3], reverse, v[4], g_ld, o[0], o[1], o[2]);
    return A(0);
  }
};

template <typename T>
void coupling_fwd_impl(const CouplingParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 4, 1> a{p.layout, {p.x, p.s, p.t, p.mask}, {p.y}};
  a.row_out = p.logdet;
  launch_rows(a, CouplingFwd{p.reverse}, stream);
}

template <typename T>
void coupling_bwd_impl(const CouplingParams<T>& p, cudaStream_t stream) {
  RowArgs<T, 5, 3> a{p.layout, {p.x, p.s, p.t, p.mask, p.grad_y}, {p.grad_x, p.grad_s, p.grad_t}};
  a.row_in = p.grad_logdet;
  launch_rows(a, CouplingBwd{p.reverse}, stream);
}

}  // namespace

DGM_CUDA_INSTANTIATE(coupling_fwd, CouplingParams)
DGM_CUDA_INSTANTIATE(coupling_bwd, CouplingParams)

}  // namespace dgm_ext::cuda
