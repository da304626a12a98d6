// Stack of K planar flow layers: CPU kernels, vectorised across rows of z.
//
// The forward saves the pre-activations a_k (n, K); the backward walks the layers in reverse
// and reconstructs z_{k-1} = z_k - u_k tanh(a_k), so no per-layer copy of z is stored.
// Parameter gradients are summed per fixed block of rows and the blocks are added in order,
// so the result does not depend on the number of threads.
#include <vector>

#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

constexpr int64_t kPlanarBlock = 1024;  // rows per deterministic reduction block

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

template <typename T>
std::vector<T> planar_uw(const PlanarParams<T>& p) {
  std::vector<T> uw(p.k, T(0));
  for (int64_t k = 0; k < p.k; ++k)
    for (int64_t j = 0; j < p.d; ++j) uw[k] += p.u[k * p.d + j] * p.w[k * p.d + j];
  return uw;
}

template <typename T>
void planar_fwd_impl(const PlanarParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t d = p.d, K = p.k;
  const std::vector<T> uw = planar_uw(p);
  at::parallel_for(0, (p.n + W - 1) / W, 64, [&](int64_t b0, int64_t b1) {
    std::vector<Vec> z(d), a(K);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = blk * W;
      const int64_t count = std::min<int64_t>(W, p.n - r0);
      load_lanes(p.z + r0 * d, d, count, z.data());
      Vec ld(T(0));
      for (int64_t k = 0; k < K; ++k) {
        const T* uk = p.u + k * d;
        const T* wk = p.w + k * d;
        Vec pre(p.b[k]);
        for (int64_t j = 0; j < d; ++j) pre = at::vec::fmadd(Vec(wk[j]), z[j], pre);
        const Vec h = tanh_(pre);
        for (int64_t j = 0; j < d; ++j) z[j] = at::vec::fmadd(Vec(uk[j]), h, z[j]);
        ld = ld + math::planar_logdet_term(h, Vec(uw[k]));
        a[k] = pre;
      }
      store_lanes(z.data(), d, count, p.z_out + r0 * d);
      store_lanes(a.data(), K, count, p.preact + r0 * K);
      ld.store(p.logdet + r0, count);
    }
  });
}

template <typename T>
void planar_bwd_impl(const PlanarParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t d = p.d, K = p.k;
  const std::vector<T> uw = planar_uw(p);
  const int64_t n_blocks = (p.n + kPlanarBlock - 1) / kPlanarBlock;
  const int64_t n_par = K * (2 * d + 1);  // [grad_u (K*d) | grad_w (K*d) | grad_b (K)]
  std::vector<T> partial(n_blocks * n_par, T(0));

  at::parallel_for(0, n_blocks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<Vec> z(d), zprev(d), gz(d), a(K), acc(n_par);
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(acc.begin(), acc.end(), Vec(T(0)));
      const int64_t row_end = std::min(p.n, (c + 1) * kPlanarBlock);
      for (int64_t r0 = c * kPlanarBlock; r0 < row_end; r0 += W) {
        const int64_t count = std::min<int64_t>(W, row_end - r0);
        load_lanes(p.z_final + r0 * d, d, count, z.data());
        load_lanes(p.grad_z + r0 * d, d, count, gz.data());
        load_lanes(p.preact_in + r0 * K, K, count, a.data());
        const Vec g_ld = Vec::loadu(p.grad_logdet + r0, count);
        for (int64_t k = K - 1; k >= 0; --k) {
          const T* uk = p.u + k * d;
          const T* wk = p.w + k * d;
          const Vec h = tanh_(a[k]);
          Vec gzu(T(0));
          for (int64_t j = 0; j < d; ++j) {
            zprev[j] = z[j] - Vec(uk[j]) * h;
            gzu = at::vec::fmadd(gz[j], Vec(uk[j]), gzu);
          }
          Vec g_a, coef;
          math::planar_layer_grad(gzu, g_ld, h, Vec(uw[k]), g_a, coef);
          // Padding lanes of a partial vector must not reach the parameter sums.
          if (count < W) {
            g_a = Vec::set(Vec(T(0)), g_a, count);
            coef = Vec::set(Vec(T(0)), coef, count);
          }
          const Vec hm = count < W ? Vec::set(Vec(T(0)), h, count) : h;
          for (int64_t j = 0; j < d; ++j) {
            Vec& gu = acc[k * d + j];
            Vec& gw = acc[K * d + k * d + j];
            gu = gu + gz[j] * hm + coef * Vec(wk[j]);
            gw = gw + g_a * zprev[j] + coef * Vec(uk[j]);
            gz[j] = at::vec::fmadd(g_a, Vec(wk[j]), gz[j]);
            z[j] = zprev[j];
          }
          acc[2 * K * d + k] = acc[2 * K * d + k] + g_a;
        }
        store_lanes(gz.data(), d, count, p.grad_z_in + r0 * d);
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

DGM_INSTANTIATE(planar_fwd, PlanarParams)
DGM_INSTANTIATE(planar_bwd, PlanarParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
