// Shared CUDA machinery: storage <-> compute conversions, 16-byte packs, deterministic group
// reductions, launch-size helpers and the generic row kernel used by every op whose work is a
// RowLayout (all ops but categorical and planar).
//
// Determinism: every reduction is a fixed tree (warp xor-shuffles, then a fixed-order sum of
// the per-warp partials through shared memory). The shape of that tree depends only on the
// problem shape and dtype, never on pointer alignment, on the grid size or on the device, so
// a result is bit-identical from run to run. No float atomics anywhere.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/kernels_cuda.h"
#include "dgm_ext/math.h"
#include "dgm_ext/params.h"

namespace dgm_ext::cuda {

// ---- storage and compute types -----------------------------------------------------------
// Compute type: float for float/half/bf16 storage, double for double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Elements per 16-byte pack: the unit of work of one thread ("chunk") along a row.
template <typename T>
constexpr int kChunk = static_cast<int>(16 / sizeof(T));

template <typename T>
struct alignas(16) Pack {
  T v[kChunk<T>];
};

// Loads one chunk of C elements starting at p[0] into acc (vectorised: one 16-byte load, p
// must be 16-byte aligned), or element by element with the tail [n, C) left at zero.
template <typename T>
__device__ __forceinline__ void load_chunk_vec(const T* p, acc_t<T>* out) {
  const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
  for (int e = 0; e < kChunk<T>; ++e) out[e] = to_acc(pk.v[e]);
}
template <typename T>
__device__ __forceinline__ void load_chunk_scalar(const T* p, int n, acc_t<T>* out) {
#pragma unroll
  for (int e = 0; e < kChunk<T>; ++e) out[e] = e < n ? to_acc(p[e]) : acc_t<T>(0);
}
template <typename T>
__device__ __forceinline__ void store_chunk_vec(T* p, const acc_t<T>* in) {
  Pack<T> pk;
#pragma unroll
  for (int e = 0; e < kChunk<T>; ++e) pk.v[e] = from_acc<T>(in[e]);
  *reinterpret_cast<Pack<T>*>(p) = pk;
}
template <typename T>
__device__ __forceinline__ void store_chunk_scalar(T* p, int n, const acc_t<T>* in) {
#pragma unroll
  for (int e = 0; e < kChunk<T>; ++e)
    if (e < n) p[e] = from_acc<T>(in[e]);
}

__host__ __device__ inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// ---- deterministic reductions over a group of G threads (G a power of two) ---------------
// Groups are G consecutive threads of the block; G <= 32 stays inside a warp, larger groups
// span G/32 whole warps. Every thread of the block must call these (inactive threads with a
// neutral value): the G > 32 path synchronises the block. `sh` holds >= blockDim/32 values.
// All threads of a group receive the same, bit-identical result (xor butterfly).
template <typename A>
__device__ __forceinline__ A warp_sum(A v, int width) {
  for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename A>
__device__ __forceinline__ A warp_max(A v, int width) {
  for (int o = width / 2; o > 0; o >>= 1) v = math::max_(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename A>
__device__ __forceinline__ A group_sum(A v, int G, A* sh) {
  v = warp_sum(v, G < 32 ? G : 32);
  if (G > 32) {
    __syncthreads();  // sh may still be read by the previous call
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    const int first = (threadIdx.x / G) * (G / 32);
    A s = A(0);
    for (int w = 0; w < G / 32; ++w) s += sh[first + w];
    v = s;
  }
  return v;
}

// ---- launch sizes --------------------------------------------------------------------------
constexpr int kBlock = 256;
// Threads wanted in flight for a full device (about an H100: 132 SMs x 2048). Used to size
// groups; a constant (not the queried SM count) so that reduction trees depend on shapes only.
constexpr int64_t kTargetThreads = int64_t(1) << 18;

inline int next_pow2(int64_t v) {
  int p = 1;
  while (p < v && p < (1 << 30)) p <<= 1;
  return p;
}
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Streaming multiprocessors of the current device (cached per device).
inline int sm_count() {
  static int cache[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 132;
  if (dev < 0 || dev >= 64) return 132;
  if (cache[dev] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
      n = 132;
    cache[dev] = n;
  }
  return cache[dev];
}

// Grid for a grid-stride loop over `items` work items with `per_block` items per block.
inline unsigned grid_for(int64_t items, int64_t per_block, int block) {
  const int64_t need = std::max<int64_t>(1, ceil_div(items, per_block));
  const int64_t cap = int64_t(sm_count()) * std::max(1, 2048 / block) * 4;
  return static_cast<unsigned>(std::min(need, cap));
}

// Threads per row for a row reduction over `chunks` chunks per row: about 4 chunks per thread,
// widened (up to a whole block) while the rows alone cannot fill the device.
inline int reduce_group(int64_t rows, int64_t chunks) {
  int64_t G = std::min<int64_t>(32, next_pow2(ceil_div(chunks, 4)));
  while (G < kBlock && rows * G < kTargetThreads && G * 2 <= chunks) G *= 2;
  return static_cast<int>(G);
}

// ---- the generic row kernel --------------------------------------------------------------
// Work item = (row, tile of columns). For each element of the tile the Body is called as
//   A row_term = body(A row_value, const A* in /*NIN*/, A* out /*NOUT*/)
// (A = acc_t<T>), the NOUT results are stored to out[k][row * cols + col] (skipped where
// out[k] is null) and, when row_out is set (then tiles == 1), row_out[row] = sum of row_term
// over the row. row_in (nullable) is a per-row scalar handed to the body (incoming gradient).
//
// A thread of a group handles chunks lane, lane + G, ... of C = 16/sizeof(T) consecutive
// columns and accumulates its terms chunk by chunk, element by element: the same order
// whether the chunk was loaded with one 16-byte load (VEC) or element-wise (unaligned input,
// or cols not a multiple of C), so alignment never changes a result.
template <typename T, int NIN, int NOUT>
struct RowArgs {
  RowLayout L;
  const T* in[NIN];
  T* out[NOUT > 0 ? NOUT : 1] = {};
  const T* row_in = nullptr;
  T* row_out = nullptr;
  int64_t tiles = 1;      // column tiles per row
  int64_t tile_cols = 0;  // columns per tile, a multiple of C
  int group = 1;          // threads per work item (power of two, <= kBlock)
};

template <typename T, int NIN, int NOUT, bool VEC, typename Body>
__global__ void __launch_bounds__(kBlock)
    row_kernel(const RowArgs<T, NIN, NOUT> a, const Body body) {
  using A = acc_t<T>;
  constexpr int C = kChunk<T>;
  __shared__ A sh[kBlock / 32];
  const int G = a.group;
  const int lane = threadIdx.x & (G - 1);
  const int per_block = blockDim.x / G;
  const int local = threadIdx.x / G;
  const int64_t cols = a.L.cols;
  const int64_t total = a.L.rows * a.tiles;
  for (int64_t base = int64_t(blockIdx.x) * per_block; base < total;
       base += int64_t(gridDim.x) * per_block) {
    const int64_t item = base + local;
    const bool valid = item < total;
    int64_t r = 0;
    A acc = A(0);
    if (valid) {
      r = item / a.tiles;
      const int64_t c0 = (item - r * a.tiles) * a.tile_cols;
      const int64_t c1 = c0 + a.tile_cols < cols ? c0 + a.tile_cols : cols;
      int64_t off[kMaxInputs];
      a.L.index.offsets(r, off);
      const T* src[NIN];
      A bcast[NIN];
#pragma unroll
      for (int i = 0; i < NIN; ++i) {
        src[i] = a.in[i] + off[i];
        bcast[i] = a.L.col_stride[i] == 0 ? to_acc(src[i][0]) : A(0);
      }
      const A rv = a.row_in ? to_acc(a.row_in[r]) : A(0);
      const int64_t obase = r * cols;
      for (int64_t j = c0 + int64_t(lane) * C; j < c1; j += int64_t(G) * C) {
        const int n = c1 - j < C ? static_cast<int>(c1 - j) : C;
        A v[NIN][C];
#pragma unroll
        for (int i = 0; i < NIN; ++i) {
          if (a.L.col_stride[i] == 0) {
#pragma unroll
            for (int e = 0; e < C; ++e) v[i][e] = bcast[i];
          } else if (VEC) {
            load_chunk_vec(src[i] + j, v[i]);
          } else {
            load_chunk_scalar(src[i] + j, n, v[i]);
          }
        }
        A o[NOUT > 0 ? NOUT : 1][C];
#pragma unroll
        for (int e = 0; e < C; ++e) {
          A in_e[NIN];
          A out_e[NOUT > 0 ? NOUT : 1];
#pragma unroll
          for (int i = 0; i < NIN; ++i) in_e[i] = v[i][e];
          const A term = body(rv, in_e, out_e);
          if (VEC || e < n) acc += term;
#pragma unroll
          for (int k = 0; k < NOUT; ++k) o[k][e] = out_e[k];
        }
#pragma unroll
        for (int k = 0; k < NOUT; ++k) {
          if (a.out[k] == nullptr) continue;
          if (VEC) {
            store_chunk_vec(a.out[k] + obase + j, o[k]);
          } else {
            store_chunk_scalar(a.out[k] + obase + j, n, o[k]);
          }
        }
      }
    }
    if (a.row_out != nullptr) {  // uniform over the launch
      acc = group_sum(acc, G, sh);
      if (valid && lane == 0) a.row_out[r] = from_acc<T>(acc);
    }
  }
}

// Host side: sizes the launch and picks the vectorised variant when every strided input and
// every output allows 16-byte accesses on every row.
template <typename T, int NIN, int NOUT, typename Body>
void launch_rows(RowArgs<T, NIN, NOUT> a, const Body& body, cudaStream_t stream) {
  constexpr int C = kChunk<T>;
  const RowLayout& L = a.L;
  if (L.rows <= 0 || L.cols <= 0) return;
  const int64_t chunks = ceil_div(L.cols, C);
  if (a.row_out != nullptr) {
    a.tiles = 1;
    a.tile_cols = chunks * C;
    a.group = reduce_group(L.rows, chunks);
  } else {
    // Pure elementwise: tiles of at most 128 chunks, about 4 chunks per thread.
    const int64_t tile_chunks = std::min<int64_t>(chunks, 128);
    a.tiles = ceil_div(chunks, tile_chunks);
    a.tile_cols = tile_chunks * C;
    a.group = std::min(32, next_pow2(ceil_div(tile_chunks, 4)));
  }
  bool vec = L.cols % C == 0;
  for (int i = 0; i < NIN && vec; ++i) {
    if (L.col_stride[i] == 0) continue;
    vec = aligned16(a.in[i]);
    for (int d = 0; d < L.index.ndim && vec; ++d) vec = L.index.strides[i][d] % C == 0;
  }
  for (int k = 0; k < NOUT && vec; ++k) vec = a.out[k] == nullptr || aligned16(a.out[k]);
  const unsigned grid = grid_for(L.rows * a.tiles, kBlock / a.group, kBlock);
  if (vec) {
    row_kernel<T, NIN, NOUT, true, Body><<<grid, kBlock, 0, stream>>>(a, body);
  } else {
    row_kernel<T, NIN, NOUT, false, Body><<<grid, kBlock, 0, stream>>>(a, body);
  }
}

// Instantiates the four storage types of a launcher `name` defined as a template name_impl.
#define DGM_CUDA_INSTANTIATE_ONE(T, name, P) \
  void name(const P<T>& p, cudaStream_t stream) { name##_impl<T>(p, stream); }
#define DGM_CUDA_INSTANTIATE(name, P) DGM_CUDA_FOR_EACH_STORAGE(DGM_CUDA_INSTANTIATE_ONE, name, P)

}  // namespace dgm_ext::cuda
