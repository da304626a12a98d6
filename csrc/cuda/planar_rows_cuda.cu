// Stack of K planar layers with per-row parameters: CUDA kernels.
//
// z is (S, N, d); row r = s * N + i uses the layer parameters u_i, w_i (K, d), b_i (K), read
// in place for every sample. As in planar_cuda.cu a group of G threads (a power of two <= 32)
// owns a row, thread `lane` keeping the elements j = lane + G*e (e < PER) in registers (so
// d <= kPlanarMaxDim), and the dot products are xor-butterfly sums inside the group (every
// thread gets the same bits). u_ik.w_ik is computed once per launch into the workspace.
//
// Backward: a group owns a work item (sample block, i) and walks its rows in sample order,
// each row's layers in reverse from the saved activations (z_{k-1} = z_k - u_k h_k). The
// parameter gradients of row i (K(2d+1) values) need no reduction across threads: the lane
// that owns element j adds that element's terms, row after row, into the item's slice of a
// scratch buffer, which no other thread touches (grad_b by lane 0); a second kernel sums the
// slices of each i in block order. The blocks depend only on (S, N, d, K, dtype), never on the
// grid or the device, so results are bit-identical run to run. No atomics.
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

constexpr int64_t kRowsTargetItems = 8192;                 // backward work items wanted
constexpr int64_t kRowsPartialBudget = int64_t(64) << 20;  // bytes of block partials

inline size_t align256(size_t v) { return (v + 255) & ~size_t(255); }

struct RowsShape {
  int per;                // register elements per thread
  int group;              // threads per row
  int64_t block_samples;  // backward: samples per work item
  int64_t blocks;         // backward: sample blocks
};

template <typename T>
int64_t rows_n_params(const PlanarRowsParams<T>& p) {
  return p.k * (2 * p.d + 1);
}

template <typename T>
bool rows_wants_params(const PlanarRowsParams<T>& p) {
  return p.grad_u != nullptr || p.grad_w != nullptr || p.grad_b != nullptr;
}

template <typename T>
RowsShape rows_shape(const PlanarRowsParams<T>& p) {
  RowsShape s{};
  const int64_t d = std::max<int64_t>(p.d, 1);
  s.per = d <= 32 * 4 ? 4 : d <= 32 * 8 ? 8 : d <= 32 * 16 ? 16 : 32;
  s.group = std::min(32, next_pow2(ceil_div(d, s.per)));
  const int64_t samples = std::max<int64_t>(p.samples, 1);
  const int64_t n = std::max<int64_t>(p.n, 1);
  const int64_t slice = std::max<int64_t>(1, n * rows_n_params(p) * int64_t(sizeof(acc_t<T>)));
  int64_t blocks = std::min(samples, std::max<int64_t>(1, ceil_div(kRowsTargetItems, n)));
  blocks = std::max<int64_t>(1, std::min(blocks, kRowsPartialBudget / slice));
  s.block_samples = ceil_div(samples, blocks);
  s.blocks = ceil_div(samples, s.block_samples);
  return s;
}

template <typename T>
__global__ void rows_uw_kernel(const PlanarRowsParams<T> p, acc_t<T>* uw) {
  using A = acc_t<T>;
  const int64_t items = p.n * p.k;  // (i, k), u and w rows contiguous in that order
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < items;
       e += int64_t(gridDim.x) * blockDim.x) {
    A s = A(0);
    for (int64_t j = 0; j < p.d; ++j) s += to_acc(p.u[e * p.d + j]) * to_acc(p.w[e * p.d + j]);
    uw[e] = s;
  }
}

template <typename T, int PER>
__global__ void __launch_bounds__(kBlock)
    rows_fwd_kernel(const PlanarRowsParams<T> p, const acc_t<T>* __restrict__ uw, int G) {
  using A = acc_t<T>;
  const int64_t d = p.d, K = p.k, N = p.n;
  const int64_t rows = p.samples * N;
  const int lane = threadIdx.x & (G - 1);
  const int per_block = blockDim.x / G;
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < rows;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t r = base + threadIdx.x / G;
    const bool valid = r < rows;
    const int64_t i = r % N;  // a valid parameter row even for padding rows
    const T* ui = p.u + i * K * d;
    const T* wi = p.w + i * K * d;
    const T* bi = p.b + i * K;
    const A* uwi = uw + i * K;
    A z[PER];
#pragma unroll
    for (int e = 0; e < PER; ++e) {
      const int64_t j = lane + int64_t(G) * e;
      z[e] = valid && j < d ? to_acc(p.z[r * d + j]) : A(0);
    }
    A ld = A(0);
    for (int64_t k = 0; k < K; ++k) {
      const T* uk = ui + k * d;
      const T* wk = wi + k * d;
      A part = A(0);
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int64_t j = lane + int64_t(G) * e;
        if (j < d) part += to_acc(wk[j]) * z[e];
      }
      const A h = math::tanh_(to_acc(bi[k]) + warp_sum(part, G));
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int64_t j = lane + int64_t(G) * e;
        if (j < d) z[e] += to_acc(uk[j]) * h;
      }
      ld += math::planar_logdet_term(h, uwi[k]);
      if (valid && lane == 0) p.act[r * K + k] = from_acc<T>(h);
    }
    if (valid) {
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int64_t j = lane + int64_t(G) * e;
        if (j < d) p.z_out[r * d + j] = from_acc<T>(z[e]);
      }
      if (lane == 0) p.logdet[r] = from_acc<T>(ld);
    }
  }
}

// partial: (blocks, N, P), P = [grad_u (K*d) | grad_w (K*d) | grad_b (K)], zeroed before;
// null when no parameter gradient is requested.
template <typename T, int PER>
__global__ void __launch_bounds__(kBlock)
    rows_bwd_kernel(const PlanarRowsParams<T> p, const acc_t<T>* __restrict__ uw,
                    acc_t<T>* __restrict__ partial, int G, int64_t block_samples,
                    int64_t blocks) {
  using A = acc_t<T>;
  const int64_t d = p.d, K = p.k, N = p.n, S = p.samples;
  const int64_t kd = K * d;
  const int64_t n_params = K * (2 * d + 1);
  const int64_t items = blocks * N;  // item = blk * N + i
  const int lane = threadIdx.x & (G - 1);
  const int per_block = blockDim.x / G;
  // Every loop below has the same trip count in all threads of a warp (the shuffles need the
  // whole warp); padding items and rows only skip their loads and stores.
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < items;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t item = base + threadIdx.x / G;
    const bool item_ok = item < items;
    const int64_t i = item % N, blk = item / N;
    const T* ui = p.u + i * kd;
    const T* wi = p.w + i * kd;
    const A* uwi = uw + i * K;
    A* part = partial != nullptr && item_ok ? partial + item * n_params : nullptr;
    for (int64_t s_off = 0; s_off < block_samples; ++s_off) {
      const int64_t s = blk * block_samples + s_off;
      const bool valid = item_ok && s < S;
      const int64_t r = s * N + i;
      A z[PER], gz[PER];
#pragma unroll
      for (int e = 0; e < PER; ++e) {
        const int64_t j = lane + int64_t(G) * e;
        const bool in = valid && j < d;
        z[e] = in ? to_acc(p.z_final[r * d + j]) : A(0);
        gz[e] = in ? to_acc(p.grad_z[r * d + j]) : A(0);
      }
      const A g_ld = valid ? to_acc(p.grad_logdet[r]) : A(0);
      for (int64_t k = K - 1; k >= 0; --k) {
        const T* uk = ui + k * d;
        const T* wk = wi + k * d;
        const A h = valid ? to_acc(p.act_in[r * K + k]) : A(0);
        A part_gzu = A(0);
#pragma unroll
        for (int e = 0; e < PER; ++e) {
          const int64_t j = lane + int64_t(G) * e;
          if (j < d) part_gzu += gz[e] * to_acc(uk[j]);
        }
        A g_a, coef;
        math::planar_layer_grad(warp_sum(part_gzu, G), g_ld, h, uwi[k], g_a, coef);
        const bool store = valid && part != nullptr;
#pragma unroll
        for (int e = 0; e < PER; ++e) {
          const int64_t j = lane + int64_t(G) * e;
          if (j >= d) continue;
          A gu, gw;
          math::planar_elem_grad(to_acc(uk[j]), to_acc(wk[j]), h, g_a, coef, z[e], gz[e], gu,
                                 gw);
          if (store) {
            part[k * d + j] += gu;
            part[kd + k * d + j] += gw;
          }
        }
        if (store && lane == 0) part[2 * kd + k] += g_a;
      }
      if (valid && p.grad_z_in != nullptr) {
#pragma unroll
        for (int e = 0; e < PER; ++e) {
          const int64_t j = lane + int64_t(G) * e;
          if (j < d) p.grad_z_in[r * d + j] = from_acc<T>(gz[e]);
        }
      }
    }
  }
}

// One thread per parameter of every row i: the block slices summed in block order.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    rows_param_reduce_kernel(const PlanarRowsParams<T> p, const acc_t<T>* __restrict__ partial,
                             int64_t blocks) {
  using A = acc_t<T>;
  const int64_t K = p.k, N = p.n;
  const int64_t kd = K * p.d;
  const int64_t n_params = K * (2 * p.d + 1);
  const int64_t total = N * n_params;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / n_params, q = e - i * n_params;
    A s = A(0);
    for (int64_t blk = 0; blk < blocks; ++blk) s += partial[(blk * N + i) * n_params + q];
    const T v = from_acc<T>(s);
    if (q < kd) {
      if (p.grad_u != nullptr) p.grad_u[i * kd + q] = v;
    } else if (q < 2 * kd) {
      if (p.grad_w != nullptr) p.grad_w[i * kd + q - kd] = v;
    } else if (p.grad_b != nullptr) {
      p.grad_b[i * K + q - 2 * kd] = v;
    }
  }
}

template <typename F>
void with_rows_per(int per, F f) {
  switch (per) {
    case 4:
      f(std::integral_constant<int, 4>{});
      break;
    case 8:
      f(std::integral_constant<int, 8>{});
      break;
    case 16:
      f(std::integral_constant<int, 16>{});
      break;
    default:
      f(std::integral_constant<int, 32>{});
      break;
  }
}

template <typename T>
size_t rows_uw_bytes(const PlanarRowsParams<T>& p) {
  return align256(size_t(std::max<int64_t>(p.n * p.k, 1)) * sizeof(acc_t<T>));
}

template <typename T>
size_t rows_partial_elems(const PlanarRowsParams<T>& p) {
  if (!rows_wants_params(p)) return 0;
  return size_t(rows_shape(p).blocks) * size_t(p.n) * size_t(rows_n_params(p));
}

template <typename T>
size_t planar_rows_fwd_workspace_impl(const PlanarRowsParams<T>& p) {
  return rows_uw_bytes(p);
}

template <typename T>
size_t planar_rows_bwd_workspace_impl(const PlanarRowsParams<T>& p) {
  return rows_uw_bytes(p) + align256(rows_partial_elems(p) * sizeof(acc_t<T>));
}

template <typename T>
void launch_rows_uw(const PlanarRowsParams<T>& p, acc_t<T>* uw, cudaStream_t stream) {
  if (p.n * p.k <= 0) return;
  rows_uw_kernel<T><<<grid_for(p.n * p.k, kBlock, kBlock), kBlock, 0, stream>>>(p, uw);
}

template <typename T>
void planar_rows_fwd_impl(const PlanarRowsParams<T>& p, void* workspace, cudaStream_t stream) {
  const int64_t rows = p.samples * p.n;
  if (rows <= 0 || p.d < 0 || p.d > kPlanarMaxDim) return;
  auto* uw = static_cast<acc_t<T>*>(workspace);
  launch_rows_uw(p, uw, stream);
  const RowsShape s = rows_shape(p);
  const unsigned grid = grid_for(rows, kBlock / s.group, kBlock);
  with_rows_per(s.per, [&](auto per) {
    rows_fwd_kernel<T, decltype(per)::value><<<grid, kBlock, 0, stream>>>(p, uw, s.group);
  });
}

template <typename T>
void planar_rows_bwd_impl(const PlanarRowsParams<T>& p, void* workspace, cudaStream_t stream) {
  const int64_t rows = p.samples * p.n;
  if (rows <= 0 || p.d < 0 || p.d > kPlanarMaxDim) return;
  auto* uw = static_cast<acc_t<T>*>(workspace);
  const size_t n_partial = rows_partial_elems(p);
  acc_t<T>* partial =
      n_partial > 0
          ? reinterpret_cast<acc_t<T>*>(static_cast<char*>(workspace) + rows_uw_bytes(p))
          : nullptr;
  const RowsShape s = rows_shape(p);
  launch_rows_uw(p, uw, stream);
  if (partial != nullptr) cudaMemsetAsync(partial, 0, n_partial * sizeof(acc_t<T>), stream);
  const unsigned grid = grid_for(s.blocks * p.n, kBlock / s.group, kBlock);
  with_rows_per(s.per, [&](auto per) {
    rows_bwd_kernel<T, decltype(per)::value>
        <<<grid, kBlock, 0, stream>>>(p, uw, partial, s.group, s.block_samples, s.blocks);
  });
  if (partial != nullptr) {
    rows_param_reduce_kernel<T>
        <<<grid_for(p.n * rows_n_params(p), kBlock, kBlock), kBlock, 0, stream>>>(p, partial,
                                                                                  s.blocks);
  }
}

}  // namespace

#define DGM_CUDA_PLANAR_ROWS(T, unused)                                                   \
  size_t planar_rows_fwd_workspace(const PlanarRowsParams<T>& p) {                        \
    return planar_rows_fwd_workspace_impl<T>(p);                                          \
  }                                                                                       \
  size_t planar_rows_bwd_workspace(const PlanarRowsParams<T>& p) {                        \
    return planar_rows_bwd_workspace_impl<T>(p);                                          \
  }                                                                                       \
  void planar_rows_fwd(const PlanarRowsParams<T>& p, void* workspace, cudaStream_t stream) { \
    planar_rows_fwd_impl<T>(p, workspace, stream);                                        \
  }                                                                                       \
  void planar_rows_bwd(const PlanarRowsParams<T>& p, void* workspace, cudaStream_t stream) { \
    planar_rows_bwd_impl<T>(p, workspace, stream);                                        \
  }
DGM_CUDA_FOR_EACH_STORAGE(DGM_CUDA_PLANAR_ROWS, 0)
#undef DGM_CUDA_PLANAR_ROWS

}  // namespace dgm_ext::cuda
