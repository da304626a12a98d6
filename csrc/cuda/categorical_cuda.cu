// Categorical log-likelihood over K classes: CUDA kernels.
//
// Forward, two kernels:
//   1. per (row, column) pair, a group of GK threads computes the logsumexp over the K class
//      logits (max, then sum of exp(l - max); two passes, the second hits L1) -> lse;
//   2. per row, a group sums l[x] - lse over the columns -> out.
// Backward: per pair, the group writes grad * (1[k == x] - softmax_k) for all K classes.
// Pairs of a row are independent, so a 128 x 784 x 256 problem yields 100k groups.
#include <cmath>

#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

// Threads per (row, column) pair: about two chunks of classes per thread, at most a warp.
inline int class_group(int64_t K, int C) {
  return std::min(32, next_pow2(ceil_div(ceil_div(K, C), 2)));
}

template <typename T>
struct PairCtx {
  const T* l;   // the pair's K logits
  int64_t c;    // class index of the pair
};

template <typename T>
__device__ __forceinline__ PairCtx<T> pair_ctx(const CategoricalParams<T>& p, int64_t q) {
  const RowLayout& L = p.layout;
  const int64_t r = q / L.cols;
  const int64_t d = q - r * L.cols;
  int64_t off[kMaxInputs];
  L.index.offsets(r, off);
  return {p.logits + off[0] + d * L.col_stride[0], p.x[off[1] + d * L.col_stride[1]]};
}

// Chunk k0.. of the K logits (vectorised when the pair's logits are 16-byte aligned and K is a
// multiple of the chunk; identical values and order either way).
template <typename T>
__device__ __forceinline__ void load_classes(const T* l, int64_t k0, int64_t K, bool vec,
                                             acc_t<T>* v) {
  const int n = K - k0 < kChunk<T> ? static_cast<int>(K - k0) : kChunk<T>;
  if (vec) {
    load_chunk_vec(l + k0, v);
  } else {
    load_chunk_scalar(l + k0, n, v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock)
    categorical_lse_kernel(const CategoricalParams<T> p, int GK, bool k_multiple) {
  using A = acc_t<T>;
  constexpr int C = kChunk<T>;
  const int64_t K = p.num_classes;
  const int64_t total = p.layout.rows * p.layout.cols;
  const int lane = threadIdx.x & (GK - 1);
  const int per_block = blockDim.x / GK;
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < total;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t q = base + threadIdx.x / GK;
    const bool valid = q < total;
    const T* l = nullptr;
    bool vec = false;
    A m = -INFINITY;
    if (valid) {
      l = pair_ctx(p, q).l;
      vec = k_multiple && aligned16(l);
      for (int64_t k = int64_t(lane) * C; k < K; k += int64_t(GK) * C) {
        A v[C];
        load_classes(l, k, K, vec, v);
        const int n = K - k < C ? static_cast<int>(K - k) : C;
#pragma unroll
        for (int e = 0; e < C; ++e)
          if (e < n) m = math::max_(m, v[e]);
      }
    }
    m = warp_max(m, GK);
    A s = A(0);
    const bool finite = isfinite(m);
    if (valid && finite) {
      for (int64_t k = int64_t(lane) * C; k < K; k += int64_t(GK) * C) {
        A v[C];
        load_classes(l, k, K, vec, v);
        const int n = K - k < C ? static_cast<int>(K - k) : C;
#pragma unroll
        for (int e = 0; e < C; ++e)
          if (e < n) s += math::exp_(v[e] - m);
      }
    }
    s = warp_sum(s, GK);
    if (valid && lane == 0) p.lse[q] = from_acc<T>(finite ? m + math::log_(s) : m);
  }
}

// out[r] = sum_d l[r, d, x[r, d]] - lse[r, d]; a group of G threads per row, columns strided.
template <typename T>
__global__ void __launch_bounds__(kBlock) categorical_rowsum_kernel(const CategoricalParams<T> p,
                                                                    int G) {
  using A = acc_t<T>;
  __shared__ A sh[kBlock / 32];
  const RowLayout& L = p.layout;
  const int64_t K = p.num_classes;
  const int lane = threadIdx.x & (G - 1);
  const int per_block = blockDim.x / G;
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < L.rows;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t r = base + threadIdx.x / G;
    const bool valid = r < L.rows;
    A acc = A(0);
    if (valid) {
      int64_t off[kMaxInputs];
      L.index.offsets(r, off);
      for (int64_t d = lane; d < L.cols; d += G) {
        const int64_t c = p.x[off[1] + d * L.col_stride[1]];
        const A lse = to_acc(p.lse[r * L.cols + d]);
        // The binding validates the indices; never read outside the row regardless.
        acc += (c >= 0 && c < K) ? to_acc(p.logits[off[0] + d * L.col_stride[0] + c]) - lse
                                 : A(NAN);
      }
    }
    acc = group_sum(acc, G, sh);
    if (valid && lane == 0) p.out[r] = from_acc<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock)
    categorical_bwd_kernel(const CategoricalParams<T> p, int GK, bool k_multiple,
                           bool out_aligned) {
  using A = acc_t<T>;
  constexpr int C = kChunk<T>;
  const int64_t K = p.num_classes;
  const int64_t total = p.layout.rows * p.layout.cols;
  const int lane = threadIdx.x & (GK - 1);
  const int per_block = blockDim.x / GK;
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < total;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t q = base + threadIdx.x / GK;
    if (q >= total) continue;  // no group collectives below
    const PairCtx<T> ctx = pair_ctx(p, q);
    const bool vec_in = k_multiple && aligned16(ctx.l);
    const bool vec_out = k_multiple && out_aligned;
    const A g = to_acc(p.grad[q / p.layout.cols]);
    const A lse = to_acc(p.lse_in[q]);
    T* out = p.grad_logits + q * K;
    for (int64_t k = int64_t(lane) * C; k < K; k += int64_t(GK) * C) {
      const int n = K - k < C ? static_cast<int>(K - k) : C;
      A v[C];
      load_classes(ctx.l, k, K, vec_in, v);
      // d/dl_k [l_c - lse] = 1[k == c] - softmax_k
#pragma unroll
      for (int e = 0; e < C; ++e) {
        v[e] = -g * math::exp_(v[e] - lse);
        if (k + e == ctx.c) v[e] += g;
      }
      if (vec_out) {
        store_chunk_vec(out + k, v);
      } else {
        store_chunk_scalar(out + k, n, v);
      }
    }
  }
}

template <typename T>
void categorical_fwd_impl(const CategoricalParams<T>& p, cudaStream_t stream) {
  const RowLayout& L = p.layout;
  if (L.rows <= 0 || L.cols <= 0) return;
  constexpr int C = kChunk<T>;
  const int64_t K = p.num_classes;
  const int GK = class_group(K, C);
  const int64_t pairs = L.rows * L.cols;
  categorical_lse_kernel<T><<<grid_for(pairs, kBlock / GK, kBlock), kBlock, 0, stream>>>(
      p, GK, K % C == 0);
  const int G = reduce_group(L.rows, ceil_div(L.cols, 4));
  categorical_rowsum_kernel<T><<<grid_for(L.rows, kBlock / G, kBlock), kBlock, 0, stream>>>(p, G);
}

template <typename T>
void categorical_bwd_impl(const CategoricalParams<T>& p, cudaStream_t stream) {
  const RowLayout& L = p.layout;
  if (L.rows <= 0 || L.cols <= 0) return;
  constexpr int C = kChunk<T>;
  const int64_t K = p.num_classes;
  const int GK = class_group(K, C);
  const int64_t pairs = L.rows * L.cols;
  categorical_bwd_kernel<T><<<grid_for(pairs, kBlock / GK, kBlock), kBlock, 0, stream>>>(
      p, GK, K % C == 0, aligned16(p.grad_logits));
}

}  // namespace

DGM_CUDA_INSTANTIATE(categorical_fwd, CategoricalParams)
DGM_CUDA_INSTANTIATE(categorical_bwd, CategoricalParams)

}  // namespace dgm_ext::cuda
