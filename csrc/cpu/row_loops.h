// Generic SIMD loops over a RowLayout, shared by the row-wise CPU kernels.
// Included only by the per-ISA kernel files (see kernels.h).
#pragma once
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "dgm_ext/math.h"
#include "dgm_ext/params.h"
#include "kernels.h"
#include "vec_math.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// Rows per parallel task: enough elements per task that threading pays off.
inline int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
}

// What a loop body returns for one vector of columns: NOUT elementwise values and a term
// that is summed along the row.
template <typename V, size_t NOUT>
struct Lanes {
  std::array<V, NOUT> elem;
  V row_term;
};

template <typename T>
inline T horizontal_sum(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vectorized<T>& a, const Vectorized<T>& b) { return a + b; }, v);
}

// For every row r and column chunk j: body(row_value, inputs) -> Lanes. Stores the elementwise
// results into out[k][r * cols + j] (skipped where out[k] is null) and, when row_out is not
// null, row_out[r] = sum over the row of row_term. row_in (may be null) is a per-row scalar
// (the incoming gradient in the backward kernels), broadcast to the body. A null input pointer
// is not read (its lanes stay zero): the layout keeps its slot so offsets still line up.
template <typename T, size_t NIN, size_t NOUT, typename Body>
void row_loop(const RowLayout& L, const std::array<const T*, NIN>& in, const T* row_in,
              T* row_out, const std::array<T*, NOUT>& out, const Body& body) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  const int64_t cols = L.cols;
  at::parallel_for(0, L.rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    RowCursor cursor(L.index, begin);
    const int64_t* off = cursor.off;
    std::array<Vec, NIN> v{};
    for (int64_t r = begin; r < end; ++r, cursor.next()) {
      const Vec rv = row_in ? Vec(row_in[r]) : Vec(T(0));
      Vec acc(T(0));
      const int64_t base = r * cols;
      int64_t j = 0;
      for (; j + W <= cols; j += W) {
        for (size_t i = 0; i < NIN; ++i) {
          if (!in[i]) continue;  // input the body does not read
          const T* p = in[i] + off[i];
          v[i] = L.col_stride[i] == 0 ? Vec(p[0]) : Vec::loadu(p + j);
        }
        const Lanes<Vec, NOUT> res = body(rv, v);
        for (size_t k = 0; k < NOUT; ++k) {
          if (out[k]) res.elem[k].store(out[k] + base + j);
        }
        if (row_out) acc = acc + res.row_term;
      }
      if (j < cols) {
        const int64_t n = cols - j;
        for (size_t i = 0; i < NIN; ++i) {
          if (!in[i]) continue;
          const T* p = in[i] + off[i];
          v[i] = L.col_stride[i] == 0 ? Vec(p[0]) : Vec::loadu(p + j, n);
        }
        const Lanes<Vec, NOUT> res = body(rv, v);
        for (size_t k = 0; k < NOUT; ++k) {
          if (out[k]) res.elem[k].store(out[k] + base + j, n);
        }
        if (row_out) acc = acc + Vec::set(Vec(T(0)), res.row_term, n);
      }
      if (row_out) row_out[r] = horizontal_sum(acc);
    }
  });
}

#define DGM_INSTANTIATE(name, P)                                 \
  void name(const P<float>& p) { name##_impl<float>(p); }       \
  void name(const P<double>& p) { name##_impl<double>(p); }

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
