// Categorical log-likelihood over K classes: CPU kernels, vectorised along the classes.
#include <cmath>
#include <limits>

#include "row_loops.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

// exp for softmax terms: ATen's faster float exp (about 20 ulp, as ATen's own softmax uses);
// the exact one for double.
template <typename T>
inline Vectorized<T> softmax_exp(const Vectorized<T>& v) {
  return v.exp_u20();
}

// log sum_k exp(l_k) over K contiguous logits (two passes over data that sits in L1).
template <typename T>
T logsumexp(const T* l, int64_t K) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const T neg_inf = -std::numeric_limits<T>::infinity();
  Vec vmax(neg_inf);
  int64_t k = 0;
  for (; k + W <= K; k += W) vmax = at::vec::maximum(vmax, Vec::loadu(l + k));
  __at_align__ T buf[W];
  vmax.store(buf);
  T m = neg_inf;
  for (int i = 0; i < W; ++i) m = std::max(m, buf[i]);
  for (; k < K; ++k) m = std::max(m, l[k]);
  if (!std::isfinite(m)) return m;  // all -inf (or +inf / nan present)
  Vec vsum(T(0));
  const Vec vm(m);
  k = 0;
  for (; k + W <= K; k += W) vsum = vsum + softmax_exp(Vec::loadu(l + k) - vm);
  if (k < K) {
    vsum = vsum + Vec::set(Vec(T(0)), softmax_exp(Vec::loadu(l + k, K - k) - vm), K - k);
  }
  return m + std::log(horizontal_sum(vsum));
}

template <typename T>
void categorical_fwd_impl(const CategoricalParams<T>& p) {
  const RowLayout& L = p.layout;
  const int64_t K = p.num_classes;
  at::parallel_for(0, L.rows, row_grain(L.cols * K), [&](int64_t begin, int64_t end) {
    RowCursor cursor(L.index, begin);
    const int64_t* off = cursor.off;
    for (int64_t r = begin; r < end; ++r, cursor.next()) {
      T acc = 0;
      for (int64_t d = 0; d < L.cols; ++d) {
        const T* l = p.logits + off[0] + d * L.col_stride[0];
        const int64_t c = p.x[off[1] + d * L.col_stride[1]];
        const T lse = logsumexp(l, K);
        p.lse[r * L.cols + d] = lse;
        // The binding validates the indices; never read outside the row regardless.
        acc += (c >= 0 && c < K) ? l[c] - lse : std::numeric_limits<T>::quiet_NaN();
      }
      p.out[r] = acc;
    }
  });
}

template <typename T>
void categorical_bwd_impl(const CategoricalParams<T>& p) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const RowLayout& L = p.layout;
  const int64_t K = p.num_classes;
  at::parallel_for(0, L.rows, row_grain(L.cols * K), [&](int64_t begin, int64_t end) {
    RowCursor cursor(L.index, begin);
    const int64_t* off = cursor.off;
    for (int64_t r = begin; r < end; ++r, cursor.next()) {
      const T g = p.grad[r];
      const Vec neg_g(-g);
      for (int64_t d = 0; d < L.cols; ++d) {
        const T* l = p.logits + off[0] + d * L.col_stride[0];
        const int64_t c = p.x[off[1] + d * L.col_stride[1]];
        const Vec lse(p.lse_in[r * L.cols + d]);
        T* out = p.grad_logits + (r * L.cols + d) * K;
        // d/dl_k [l_c - lse] = 1[k == c] - softmax_k
        int64_t k = 0;
        for (; k + W <= K; k += W) (neg_g * softmax_exp(Vec::loadu(l + k) - lse)).store(out + k);
        if (k < K) (neg_g * softmax_exp(Vec::loadu(l + k, K - k) - lse)).store(out + k, K - k);
        if (c >= 0 && c < K) out[c] += g;
      }
    }
  });
}

DGM_INSTANTIATE(categorical_fwd, CategoricalParams)
DGM_INSTANTIATE(categorical_bwd, CategoricalParams)

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
