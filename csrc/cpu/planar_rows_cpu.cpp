// Stack of K planar layers with per-row parameters: CPU kernels.
//
// z is (S, N, d) and row r = s * N + i uses the layer parameters u_i, w_i (K, d), b_i (K), so
// the parameters broadcast over the S samples without a copy. The work is cut into items
// (sample block, i): an item walks the rows s * N + i of one block of at most kRowsBlock
// samples, with u_ik.w_ik computed once per item. Along a row the d elements are vectorised
// (dot products and updates through at::vec): the parameters differ from row to row, so the
// shared-parameter kernel's vectorisation across rows (planar_cpu.cpp) does not apply.
//
// The forward saves the activations h_k (S, N, K). The backward walks the layers in reverse
// and reconstructs z_{k-1} = z_k - u_k h_k from them. The parameter gradients of row i sum
// over the samples: an item adds its rows in sample order into its own accumulator; with more
// than one block, the block sums are added in block order afterwards. The blocks depend on S
// alone, so the result does not depend on the number of threads; no atomics.
#include <algorithm>
#include <vector>

#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {
namespace {

constexpr int64_t kRowsBlock = 256;  // samples per deterministic reduction block

template <typename T>
inline Vectorized<T> load_n(const T* p, int64_t c) {
  return c == Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, c);
}

template <typename T>
inline void store_n(const Vectorized<T>& v, T* p, int64_t c) {
  if (c == Vectorized<T>::size()) {
    v.store(p);
  } else {
    v.store(p, c);
  }
}

// a.b over d elements (vector lanes, summed at the end in a fixed order).
template <typename T>
T dot_d(const T* a, const T* b, int64_t d) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  Vec acc(T(0));
  for (int64_t j = 0; j < d; j += W) {
    const int64_t c = std::min(W, d - j);
    acc = at::vec::fmadd(load_n(a + j, c), load_n(b + j, c), acc);
  }
  return horizontal_sum(acc);
}

// Work items t = block * N + i: the samples [block * per_block, (block + 1) * per_block) of
// parameter row i. The blocks depend on S alone (never on the threads).
struct Items {
  int64_t per_block;  // samples of a block
  int64_t blocks;     // sample blocks
  int64_t grain;      // items per parallel task
  int64_t begin(int64_t blk) const { return blk * per_block; }
  int64_t end(int64_t blk, int64_t samples) const {
    return std::min(samples, (blk + 1) * per_block);
  }
};

template <typename T>
Items items_of(const PlanarRowsParams<T>& p) {
  Items it{};
  it.per_block = kRowsBlock;
  it.blocks = (p.samples + it.per_block - 1) / it.per_block;
  // about 32k multiply-adds per task
  const int64_t rows = std::min(p.samples, it.per_block);
  const int64_t work = rows * std::max<int64_t>(p.k, 1) * std::max<int64_t>(p.d, 1);
  it.grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1));
  return it;
}

// u_ik . w_ik for the K layers of parameter row i.
template <typename T>
void uw_of_row(const PlanarRowsParams<T>& p, int64_t i, std::vector<T>& uw) {
  const T* ui = p.u + i * p.k * p.d;
  const T* wi = p.w + i * p.k * p.d;
  for (int64_t k = 0; k < p.k; ++k) uw[k] = dot_d(ui + k * p.d, wi + k * p.d, p.d);
}

template <typename T>
void planar_rows_fwd_impl(const PlanarRowsParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t S = p.samples, N = p.n, d = p.d, K = p.k;
  const Items it = items_of(p);
  at::parallel_for(0, it.blocks * N, it.grain, [&](int64_t t0, int64_t t1) {
    std::vector<T> uw(K);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t % N, blk = t / N;
      const T* ui = p.u + i * K * d;
      const T* wi = p.w + i * K * d;
      const T* bi = p.b + i * K;
      uw_of_row(p, i, uw);
      for (int64_t s = it.begin(blk), s_end = it.end(blk, S); s < s_end; ++s) {
        const int64_t r = s * N + i;
        T* z = p.z_out + r * d;
        std::copy(p.z + r * d, p.z + (r + 1) * d, z);
        T* act = p.act + r * K;
        T ld = T(0);
        for (int64_t k = 0; k < K; ++k) {
          const T* uk = ui + k * d;
          const T h = math::tanh_(bi[k] + dot_d(wi + k * d, z, d));
          const Vec hv(h);
          for (int64_t j = 0; j < d; j += W) {
            const int64_t c = std::min(W, d - j);
            store_n(at::vec::fmadd(load_n(uk + j, c), hv, load_n(z + j, c)), z + j, c);
          }
          ld += math::planar_logdet_term(h, uw[k]);
          act[k] = h;
        }
        p.logdet[r] = ld;
      }
    }
  });
}

// Stores the sums of parameter row i ([grad_u (K*d) | grad_w (K*d) | grad_b (K)]) into the
// requested outputs.
template <typename T>
void store_row_params(const PlanarRowsParams<T>& p, int64_t i, const T* acc) {
  const int64_t kd = p.k * p.d;
  if (p.grad_u) std::copy(acc, acc + kd, p.grad_u + i * kd);
  if (p.grad_w) std::copy(acc + kd, acc + 2 * kd, p.grad_w + i * kd);
  if (p.grad_b) std::copy(acc + 2 * kd, acc + 2 * kd + p.k, p.grad_b + i * p.k);
}

template <typename T>
void planar_rows_bwd_impl(const PlanarRowsParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t S = p.samples, N = p.n, d = p.d, K = p.k;
  const int64_t kd = K * d;
  const int64_t n_par = K * (2 * d + 1);  // [grad_u | grad_w | grad_b] of one parameter row
  const bool params = p.grad_u || p.grad_w || p.grad_b;
  const Items it = items_of(p);
  // One block: an item's sums are the result. More: one slice per (block, i), added below.
  std::vector<T> partial(params && it.blocks > 1 ? it.blocks * N * n_par : 0, T(0));

  at::parallel_for(0, it.blocks * N, it.grain, [&](int64_t t0, int64_t t1) {
    std::vector<T> uw(K), z(d), gz(d), acc(params ? n_par : 0);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t % N, blk = t / N;
      const T* ui = p.u + i * kd;
      const T* wi = p.w + i * kd;
      uw_of_row(p, i, uw);
      std::fill(acc.begin(), acc.end(), T(0));
      T* gu = params ? acc.data() : nullptr;
      T* gw = params ? gu + kd : nullptr;
      T* gb = params ? gw + kd : nullptr;
      for (int64_t s = it.begin(blk), s_end = it.end(blk, S); s < s_end; ++s) {
        const int64_t r = s * N + i;
        std::copy(p.z_final + r * d, p.z_final + (r + 1) * d, z.data());
        std::copy(p.grad_z + r * d, p.grad_z + (r + 1) * d, gz.data());
        const T g_ld = p.grad_logdet[r];
        const T* h_row = p.act_in + r * K;
        for (int64_t k = K - 1; k >= 0; --k) {
          const T* uk = ui + k * d;
          const T* wk = wi + k * d;
          const T h = h_row[k];
          T g_a, coef;
          math::planar_layer_grad(dot_d(gz.data(), uk, d), g_ld, h, uw[k], g_a, coef);
          const Vec hv(h), gav(g_a), cv(coef);
          for (int64_t j = 0; j < d; j += W) {
            const int64_t c = std::min(W, d - j);
            Vec zj = load_n(z.data() + j, c), gzj = load_n(gz.data() + j, c), guj, gwj;
            math::planar_elem_grad(load_n(uk + j, c), load_n(wk + j, c), hv, gav, cv, zj, gzj,
                                   guj, gwj);
            store_n(zj, z.data() + j, c);
            store_n(gzj, gz.data() + j, c);
            if (params) {
              T* gu_k = gu + k * d + j;
              T* gw_k = gw + k * d + j;
              store_n(load_n(gu_k, c) + guj, gu_k, c);
              store_n(load_n(gw_k, c) + gwj, gw_k, c);
            }
          }
          if (params) gb[k] += g_a;
        }
        if (p.grad_z_in) std::copy(gz.begin(), gz.end(), p.grad_z_in + r * d);
      }
      if (!params) continue;
      if (it.blocks == 1) {
        store_row_params(p, i, acc.data());
      } else {
        std::copy(acc.begin(), acc.end(), partial.data() + t * n_par);  // t = blk * N + i
      }
    }
  });

  if (!params || it.blocks == 1) return;
  // Block sums of each parameter, in block order.
  at::parallel_for(0, N, std::max<int64_t>(1, 32768 / std::max<int64_t>(it.blocks * n_par, 1)),
                   [&](int64_t i0, int64_t i1) {
                     std::vector<T> acc(n_par);
                     for (int64_t i = i0; i < i1; ++i) {
                       std::fill(acc.begin(), acc.end(), T(0));
                       for (int64_t blk = 0; blk < it.blocks; ++blk) {
                         const T* src = partial.data() + (blk * N + i) * n_par;
                         for (int64_t q = 0; q < n_par; ++q) acc[q] += src[q];
                       }
                       store_row_params(p, i, acc.data());
                     }
                   });
}

}  // namespace

DGM_INSTANTIATE(planar_rows_fwd, PlanarRowsParams)
DGM_INSTANTIATE(planar_rows_bwd, PlanarRowsParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
