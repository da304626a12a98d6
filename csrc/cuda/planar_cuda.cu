// Stack of K planar flow layers: CUDA kernels.
//
// A group of G threads (a power of two <= 32) owns a row of z; thread `lane` keeps elements
// j = lane + G*i (i < PER) of z in registers, so d <= 32 * PER <= kPlanarMaxDim. The dot
// products w_k.z and g_z.u_k are xor-butterfly reductions inside the group (every thread gets
// the same bits). u_k.w_k is computed once per launch into the workspace.
//
// Backward: the layers are walked in reverse, reconstructing z_{k-1} = z_k - u_k h_k from
// the saved activations h_k. The parameter gradients (grad_u, grad_w, grad_b: P = K(2d+1)
// values summed over the N rows) use a deterministic two-stage reduction: the rows are cut
// into chunks whose count and size depend only on (N, d, K, dtype); one warp owns a chunk and
// adds, per layer, the xor-reduced sum of its rows' contributions into that chunk's slice of a
// scratch buffer (no other warp touches it); a second kernel then sums the chunk partials of
// each parameter in a fixed order. No atomics.
#include "launch.cuh"

namespace dgm_ext::cuda {
namespace {

constexpr int64_t kPlanarMaxChunks = 4096;
constexpr int64_t kPlanarPartialBudget = int64_t(64) << 20;  // bytes of chunk partials

inline size_t align256(size_t v) { return (v + 255) & ~size_t(255); }

struct PlanarShape {
  int per;             // register elements per thread
  int group;           // threads per row
  int64_t chunk_rows;  // backward: rows per chunk (a multiple of 32 / group)
  int64_t chunks;      // backward: number of chunks
};

template <typename T>
PlanarShape planar_shape(const PlanarParams<T>& p) {
  PlanarShape s{};
  const int64_t d = std::max<int64_t>(p.d, 1);
  s.per = d <= 32 * 4 ? 4 : d <= 32 * 8 ? 8 : d <= 32 * 16 ? 16 : 32;
  s.group = std::min(32, next_pow2(ceil_div(d, s.per)));
  const int64_t rows_per_step = 32 / s.group;
  const int64_t n_params = p.k * (2 * p.d + 1);
  const int64_t budget_chunks =
      std::max<int64_t>(1, kPlanarPartialBudget / (n_params * int64_t(sizeof(acc_t<T>))));
  int64_t chunks = std::min({ceil_div(p.n, rows_per_step), kPlanarMaxChunks, budget_chunks});
  chunks = std::max<int64_t>(chunks, 1);
  s.chunk_rows = ceil_div(ceil_div(p.n, chunks), rows_per_step) * rows_per_step;
  s.chunks = ceil_div(p.n, s.chunk_rows);
  return s;
}

template <typename T>
__global__ void planar_uw_kernel(const PlanarParams<T> p, acc_t<T>* uw) {
  using A = acc_t<T>;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < p.k;
       k += int64_t(gridDim.x) * blockDim.x) {
    A s = A(0);
    for (int64_t j = 0; j < p.d; ++j) s += to_acc(p.u[k * p.d + j]) * to_acc(p.w[k * p.d + j]);
    uw[k] = s;
  }
}

template <typename T, int PER>
__global__ void __launch_bounds__(kBlock)
    planar_fwd_kernel(const PlanarParams<T> p, const acc_t<T>* __restrict__ uw, int G) {
  using A = acc_t<T>;
  const int64_t d = p.d, K = p.k;
  const int lane = threadIdx.x & (G - 1);
  const int per_block = blockDim.x / G;
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < p.n;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t r = base + threadIdx.x / G;
    const bool valid = r < p.n;
    A z[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int64_t j = lane + int64_t(G) * i;
      z[i] = valid && j < d ? to_acc(p.z[r * d + j]) : A(0);
    }
    A ld = A(0);
    for (int64_t k = 0; k < K; ++k) {
      const T* uk = p.u + k * d;
      const T* wk = p.w + k * d;
      A part = A(0);
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int64_t j = lane + int64_t(G) * i;
        if (j < d) part += to_acc(wk[j]) * z[i];
      }
      const A pre = to_acc(p.b[k]) + warp_sum(part, G);
      const A h = math::tanh_(pre);
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int64_t j = lane + int64_t(G) * i;
        if (j < d) z[i] += to_acc(uk[j]) * h;
      }
      ld += math::planar_logdet_term(h, uw[k]);
      if (valid && lane == 0) p.act[r * K + k] = from_acc<T>(h);
    }
    if (valid) {
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int64_t j = lane + int64_t(G) * i;
        if (j < d) p.z_out[r * d + j] = from_acc<T>(z[i]);
      }
      if (lane == 0) p.logdet[r] = from_acc<T>(ld);
    }
  }
}

// Sum over the groups of a warp (xor offsets G..16); the group-internal lanes stay apart.
template <typename A>
__device__ __forceinline__ A across_groups(A v, int G) {
  for (int o = G; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// partial: (chunks, P) with P = [grad_u (K*d) | grad_w (K*d) | grad_b (K)], zeroed before.
template <typename T, int PER>
__global__ void __launch_bounds__(kBlock)
    planar_bwd_kernel(const PlanarParams<T> p, const acc_t<T>* __restrict__ uw,
                      acc_t<T>* __restrict__ partial, int G, int64_t chunk_rows,
                      int64_t chunks) {
  using A = acc_t<T>;
  const int64_t d = p.d, K = p.k;
  const int64_t n_params = K * (2 * d + 1);
  const int lane = threadIdx.x & (G - 1);
  const int gid = (threadIdx.x & 31) / G;  // group within the warp
  const int steps = 32 / G;                // rows per warp step
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t c = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; c < chunks;
       c += warps) {
    A* part = partial + c * n_params;
    const int64_t row_end = min(p.n, (c + 1) * chunk_rows);
    for (int64_t r0 = c * chunk_rows; r0 < row_end; r0 += steps) {
      const int64_t r = r0 + gid;
      const bool valid = r < row_end;
      A z[PER], gz[PER];
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int64_t j = lane + int64_t(G) * i;
        const bool in = valid && j < d;
        z[i] = in ? to_acc(p.z_final[r * d + j]) : A(0);
        gz[i] = in ? to_acc(p.grad_z[r * d + j]) : A(0);
      }
      const A g_ld = valid ? to_acc(p.grad_logdet[r]) : A(0);
      for (int64_t k = K - 1; k >= 0; --k) {
        const T* uk = p.u + k * d;
        const T* wk = p.w + k * d;
        const A h = valid ? to_acc(p.act_in[r * K + k]) : A(0);
        A zprev[PER];
        A part_gzu = A(0);
#pragma unroll
        for (int i = 0; i < PER; ++i) {
          const int64_t j = lane + int64_t(G) * i;
          const A u = j < d ? to_acc(uk[j]) : A(0);
          zprev[i] = z[i] - u * h;
          part_gzu += gz[i] * u;
        }
        const A gzu = warp_sum(part_gzu, G);
        A g_a, coef;
        math::planar_layer_grad(gzu, g_ld, h, uw[k], g_a, coef);
        // Padding rows must not reach the parameter sums (select, not multiply: NaN-safe).
        g_a = valid ? g_a : A(0);
        coef = valid ? coef : A(0);
        const A gb = across_groups(g_a, G);
        if (gid == 0 && lane == 0) part[2 * K * d + k] += gb;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
          if (int64_t(G) * i >= d) break;  // uniform: no lane owns element i
          const int64_t j = lane + int64_t(G) * i;
          const bool in = j < d;
          const A u = in ? to_acc(uk[j]) : A(0);
          const A w = in ? to_acc(wk[j]) : A(0);
          const A gu = across_groups(gz[i] * h + coef * w, G);
          const A gw = across_groups(g_a * zprev[i] + coef * u, G);
          if (gid == 0 && in) {
            part[k * d + j] += gu;
            part[K * d + k * d + j] += gw;
          }
          gz[i] += g_a * w;
          z[i] = zprev[i];
        }
      }
      if (valid) {
#pragma unroll
        for (int i = 0; i < PER; ++i) {
          const int64_t j = lane + int64_t(G) * i;
          if (j < d) p.grad_z_in[r * d + j] = from_acc<T>(gz[i]);
        }
      }
    }
  }
}

// One warp per parameter: lanes take chunks lane, lane + 32, ... in order, then a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    planar_param_reduce_kernel(const PlanarParams<T> p, const acc_t<T>* __restrict__ partial,
                               int64_t chunks) {
  using A = acc_t<T>;
  const int64_t d = p.d, K = p.k;
  const int64_t n_params = K * (2 * d + 1);
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t i = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; i < n_params;
       i += warps) {
    A s = A(0);
    for (int64_t c = lane; c < chunks; c += 32) s += partial[c * n_params + i];
    s = warp_sum(s, 32);
    if (lane == 0) {
      const T v = from_acc<T>(s);
      if (i < K * d) {
        p.grad_u[i] = v;
      } else if (i < 2 * K * d) {
        p.grad_w[i - K * d] = v;
      } else {
        p.grad_b[i - 2 * K * d] = v;
      }
    }
  }
}

template <typename F>
void with_per(int per, F f) {
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
size_t planar_fwd_workspace_impl(const PlanarParams<T>& p) {
  return align256(size_t(std::max<int64_t>(p.k, 1)) * sizeof(acc_t<T>));
}

template <typename T>
size_t planar_bwd_workspace_impl(const PlanarParams<T>& p) {
  const PlanarShape s = planar_shape(p);
  return planar_fwd_workspace_impl(p) +
         align256(size_t(s.chunks) * size_t(p.k * (2 * p.d + 1)) * sizeof(acc_t<T>));
}

template <typename T>
void launch_uw(const PlanarParams<T>& p, acc_t<T>* uw, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, ceil_div(p.k, kBlock)));
  planar_uw_kernel<T><<<grid, kBlock, 0, stream>>>(p, uw);
}

template <typename T>
void planar_fwd_impl(const PlanarParams<T>& p, void* workspace, cudaStream_t stream) {
  if (p.n <= 0 || p.k <= 0 || p.d <= 0 || p.d > kPlanarMaxDim) return;
  auto* uw = static_cast<acc_t<T>*>(workspace);
  launch_uw(p, uw, stream);
  const PlanarShape s = planar_shape(p);
  const unsigned grid = grid_for(p.n, kBlock / s.group, kBlock);
  with_per(s.per, [&](auto per) {
    planar_fwd_kernel<T, decltype(per)::value><<<grid, kBlock, 0, stream>>>(p, uw, s.group);
  });
}

template <typename T>
void planar_bwd_impl(const PlanarParams<T>& p, void* workspace, cudaStream_t stream) {
  if (p.n <= 0 || p.k <= 0 || p.d <= 0 || p.d > kPlanarMaxDim) return;
  auto* uw = static_cast<acc_t<T>*>(workspace);
  auto* partial = reinterpret_cast<acc_t<T>*>(static_cast<char*>(workspace) +
                                              planar_fwd_workspace_impl(p));
  const PlanarShape s = planar_shape(p);
  const int64_t n_params = p.k * (2 * p.d + 1);
  launch_uw(p, uw, stream);
  cudaMemsetAsync(partial, 0, size_t(s.chunks) * size_t(n_params) * sizeof(acc_t<T>), stream);
  const unsigned grid = grid_for(s.chunks, kBlock / 32, kBlock);
  with_per(s.per, [&](auto per) {
    planar_bwd_kernel<T, decltype(per)::value>
        <<<grid, kBlock, 0, stream>>>(p, uw, partial, s.group, s.chunk_rows, s.chunks);
  });
  planar_param_reduce_kernel<T>
      <<<grid_for(n_params, kBlock / 32, kBlock), kBlock, 0, stream>>>(p, partial, s.chunks);
}

}  // namespace

#define DGM_CUDA_PLANAR(T, unused)                                                   \
  size_t planar_fwd_workspace(const PlanarParams<T>& p) {                            \
    return planar_fwd_workspace_impl<T>(p);                                          \
  }                                                                                  \
  size_t planar_bwd_workspace(const PlanarParams<T>& p) {                            \
    return planar_bwd_workspace_impl<T>(p);                                          \
  }                                                                                  \
  void planar_fwd(const PlanarParams<T>& p, void* workspace, cudaStream_t stream) {  \
    planar_fwd_impl<T>(p, workspace, stream);                                        \
  }                                                                                  \
  void planar_bwd(const PlanarParams<T>& p, void* workspace, cudaStream_t stream) {  \
    planar_bwd_impl<T>(p, workspace, stream);                                        \
  }
DGM_CUDA_FOR_EACH_STORAGE(DGM_CUDA_PLANAR, 0)
#undef DGM_CUDA_PLANAR

}  // namespace dgm_ext::cuda
