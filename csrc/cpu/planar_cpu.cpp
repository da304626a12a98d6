// Stack of K planar flow layers: CPU kernels, vectorised across rows of z.
//
// The forward saves the activations h_k = tanh(a_k) (n, K); the backward walks the layers in
// reverse and reconstructs z_{k-1} = z_k - u_k h_k, so no per-layer copy of z is stored and
// no tanh is recomputed. The forward takes one log per group of layers (log of the product of
// their determinants) unless a product leaves [1e-30, 1e30], where it falls back to one log per
// layer, so over/underflow can never change the result.
// Parameter gradients are summed per fixed block of rows and the blocks are added in order,
// so the result does not depend on the number of threads.
#include <type_traits>
#include <vector>

#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

constexpr int64_t kPlanarBlock = 1024;  // rows per deterministic reduction block
constexpr int64_t kLogGroup = 4;        // layers whose determinants share one log

// Transposes `count` rows of a row-major (rows, width) array into lane-major vectors.
template <typename T>
void load_lanes(const T* src, int64_t width, int64_t count, Vectorized<T>* dst) {
  using Vec = Vectorized<T>;
  __at_align__ T buf[Vec::size()];
  for (int64_t j = 0; j < width; ++j) {
    for (int64_t i = 0; i < Vec::size(); ++i) buf[i] = i < count ? src[i * width + j] : T(0);
    dst[j] = Vec::loadu(buf);
  }
}

template <typename T>
void store_lanes(const Vectorized<T>* src, int64_t width, int64_t count, T* dst) {
  using Vec = Vectorized<T>;
  __at_align__ T buf[Vec::size()];
  for (int64_t j = 0; j < width; ++j) {
    src[j].store(buf);
    for (int64_t i = 0; i < count; ++i) dst[i * width + j] = buf[i];
  }
}

// Lane vectors for d values: a fixed array when d is a compile-time constant (small d, kept in
// registers once the loops over d unroll), a heap vector otherwise.
template <typename T, int D>
struct LaneBuf {
  explicit LaneBuf(int64_t) {}
  Vectorized<T>* data() { return v; }
  Vectorized<T> v[D];
};
template <typename T>
struct LaneBuf<T, 0> {
  explicit LaneBuf(int64_t n) : v(n) {}
  Vectorized<T>* data() { return v.data(); }
  std::vector<Vectorized<T>> v;
};

// Calls f(std::integral_constant<int, D>) with D = d for d <= 4, else D = 0 (runtime d).
template <typename F>
void with_static_dim(int64_t d, F f) {
  switch (d) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}

template <typename T>
std::vector<T> planar_uw(const PlanarParams<T>& p) {
  std::vector<T> uw(p.k, T(0));
  for (int64_t k = 0; k < p.k; ++k)
    for (int64_t j = 0; j < p.d; ++j) uw[k] += p.u[k * p.d + j] * p.w[k * p.d + j];
  return uw;
}

// Rows in flight: each layer is a long dependent chain (tanh, division), so U independent
// vectors of rows go through the layer loop together and the core overlaps their chains.
constexpr int kInterleave = 4;

// Number of valid rows of sub-vector u in a tile of `count` rows starting at its first row.
template <int64_t W>
inline int64_t rows_of(int64_t count, int u) {
  return std::max<int64_t>(0, std::min<int64_t>(W, count - u * W));
}

template <typename T, int D>
void planar_fwd_dim(const PlanarParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int U = kInterleave;
  constexpr int64_t TILE = U * W;
  const int64_t d = D > 0 ? D : p.d, K = p.k;
  const std::vector<T> uw = planar_uw(p);
  at::parallel_for(0, (p.n + TILE - 1) / TILE, 16, [&](int64_t t0, int64_t t1) {
    LaneBuf<T, D * U> zbuf(d * U);
    Vec* z = zbuf.data();           // z[u * d + j]
    std::vector<Vec> hs(K * U);     // hs[u * K + k]
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * TILE;
      const int64_t count = std::min<int64_t>(TILE, p.n - r0);
      for (int u = 0; u < U; ++u) {
        load_lanes(p.z + (r0 + u * W) * d, d, rows_of<W>(count, u), z + u * d);
      }
      Vec ld[U];
      for (int u = 0; u < U; ++u) ld[u] = Vec(T(0));
      for (int64_t k0 = 0; k0 < K; k0 += kLogGroup) {
        const int64_t k1 = std::min(K, k0 + kLogGroup);
        Vec prod[U];
        for (int u = 0; u < U; ++u) prod[u] = Vec(T(1));
        for (int64_t k = k0; k < k1; ++k) {
          const T* uk = p.u + k * d;
          const T* wk = p.w + k * d;
          const Vec uwk(uw[k]);
          for (int u = 0; u < U; ++u) {
            Vec* zu = z + u * d;
            Vec pre(p.b[k]);
            for (int64_t j = 0; j < d; ++j) pre = at::vec::fmadd(Vec(wk[j]), zu[j], pre);
            const Vec h = tanh_(pre);
            for (int64_t j = 0; j < d; ++j) zu[j] = at::vec::fmadd(Vec(uk[j]), h, zu[j]);
            prod[u] = prod[u] * math::planar_det(h, uwk);
            hs[u * K + k] = h;
          }
        }
        for (int u = 0; u < U; ++u) {
          const Vec mag = prod[u].abs();
          const Vec safe = (mag > Vec(T(1e-30))) & (mag < Vec(T(1e30)));
          if (safe.zero_mask() == 0) {
            ld[u] = ld[u] + log_(mag);
          } else {
            for (int64_t k = k0; k < k1; ++k) {
              ld[u] = ld[u] + math::planar_logdet_term(hs[u * K + k], Vec(uw[k]));
            }
          }
        }
      }
      for (int u = 0; u < U; ++u) {
        const int64_t cnt = rows_of<W>(count, u);
        if (cnt == 0) break;
        const int64_t ru = r0 + u * W;
        store_lanes(z + u * d, d, cnt, p.z_out + ru * d);
        store_lanes(hs.data() + u * K, K, cnt, p.act + ru * K);
        ld[u].store(p.logdet + ru, cnt);
      }
    }
  });
}

template <typename T>
void planar_fwd_impl(const PlanarParams<T>& p) {
  with_static_dim(p.d, [&](auto dim) { planar_fwd_dim<T, decltype(dim)::value>(p); });
}

template <typename T, int D>
void planar_bwd_dim(const PlanarParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int U = kInterleave;
  constexpr int64_t TILE = U * W;
  static_assert(kPlanarBlock % (kInterleave * 8) == 0, "blocks hold whole tiles");
  const int64_t d = D > 0 ? D : p.d, K = p.k;
  const std::vector<T> uw = planar_uw(p);
  const int64_t n_blocks = (p.n + kPlanarBlock - 1) / kPlanarBlock;
  const int64_t n_par = K * (2 * d + 1);  // [grad_u (K*d) | grad_w (K*d) | grad_b (K)]
  std::vector<T> partial(n_blocks * n_par, T(0));

  at::parallel_for(0, n_blocks, 1, [&](int64_t c0, int64_t c1) {
    LaneBuf<T, D * U> zbuf(d * U), zprevbuf(d * U), gzbuf(d * U);
    Vec *z = zbuf.data(), *zprev = zprevbuf.data(), *gz = gzbuf.data();
    std::vector<Vec> hs(K * U), acc(n_par);
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(acc.begin(), acc.end(), Vec(T(0)));
      const int64_t row_end = std::min(p.n, (c + 1) * kPlanarBlock);
      for (int64_t r0 = c * kPlanarBlock; r0 < row_end; r0 += TILE) {
        const int64_t count = std::min<int64_t>(TILE, row_end - r0);
        Vec g_ld[U];
        int64_t cnt[U];
        for (int u = 0; u < U; ++u) {
          cnt[u] = rows_of<W>(count, u);
          const int64_t ru = r0 + u * W;
          load_lanes(p.z_final + ru * d, d, cnt[u], z + u * d);
          load_lanes(p.grad_z + ru * d, d, cnt[u], gz + u * d);
          load_lanes(p.act_in + ru * K, K, cnt[u], hs.data() + u * K);
          g_ld[u] = cnt[u] > 0 ? Vec::loadu(p.grad_logdet + ru, cnt[u]) : Vec(T(0));
        }
        for (int64_t k = K - 1; k >= 0; --k) {
          const T* uk = p.u + k * d;
          const T* wk = p.w + k * d;
          const Vec uwk(uw[k]);
          for (int u = 0; u < U; ++u) {
            Vec* zu = z + u * d;
            Vec* zp = zprev + u * d;
            Vec* gzu_ = gz + u * d;
            const Vec& h = hs[u * K + k];
            Vec gzu(T(0));
            for (int64_t j = 0; j < d; ++j) {
              zp[j] = zu[j] - Vec(uk[j]) * h;
              gzu = at::vec::fmadd(gzu_[j], Vec(uk[j]), gzu);
            }
            Vec g_a, coef;
            math::planar_layer_grad(gzu, g_ld[u], h, uwk, g_a, coef);
            Vec hm = h;
            // Padding lanes of a partial vector must not reach the parameter sums.
            if (cnt[u] < W) {
              g_a = Vec::set(Vec(T(0)), g_a, cnt[u]);
              coef = Vec::set(Vec(T(0)), coef, cnt[u]);
              hm = Vec::set(Vec(T(0)), h, cnt[u]);
            }
            for (int64_t j = 0; j < d; ++j) {
              Vec& gu = acc[k * d + j];
              Vec& gw = acc[K * d + k * d + j];
              gu = gu + gzu_[j] * hm + coef * Vec(wk[j]);
              gw = gw + g_a * zp[j] + coef * Vec(uk[j]);
              gzu_[j] = at::vec::fmadd(g_a, Vec(wk[j]), gzu_[j]);
              zu[j] = zp[j];
            }
            acc[2 * K * d + k] = acc[2 * K * d + k] + g_a;
          }
        }
        for (int u = 0; u < U; ++u) {
          if (cnt[u] == 0) break;
          store_lanes(gz + u * d, d, cnt[u], p.grad_z_in + (r0 + u * W) * d);
        }
      }
      T* part = partial.data() + c * n_par;
      for (int64_t i = 0; i < n_par; ++i) part[i] = horizontal_sum(acc[i]);
    }
  });

  for (int64_t i = 0; i < n_par; ++i) {
    T s = 0;
    for (int64_t c = 0; c < n_blocks; ++c) s += partial[c * n_par + i];
    if (i < K * d) {
      p.grad_u[i] = s;
    } else if (i < 2 * K * d) {
      p.grad_w[i - K * d] = s;
    } else {
      p.grad_b[i - 2 * K * d] = s;
    }
  }
}

template <typename T>
void planar_bwd_impl(const PlanarParams<T>& p) {
  with_static_dim(p.d, [&](auto dim) { planar_bwd_dim<T, decltype(dim)::value>(p); });
}

DGM_INSTANTIATE(planar_fwd, PlanarParams)
DGM_INSTANTIATE(planar_bwd, PlanarParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
