// SIMD primitives for the formulas of include/dgm_ext/math.h.
// They live in at::vec's (per-ISA, inline) namespace so that argument-dependent lookup finds
// them when a formula template is instantiated with at::vec::Vectorized<T>.
#pragma once
#include <ATen/cpu/vec/vec.h>

namespace at::vec {
inline namespace CPU_CAPABILITY {

// ATen's inlined polynomial exp (float: within about 20 ulp, i.e. ~1e-6 relative; double:
// the exact Sleef exp). Sleef's exp is an out-of-line call that forces every live vector
// register to be spilled around it, which dominated the cheap elementwise kernels.
template <typename T>
inline Vectorized<T> exp_(const Vectorized<T>& x) { return x.exp_u20(); }
template <typename T>
inline Vectorized<T> log_(const Vectorized<T>& x) { return x.log(); }
template <typename T>
inline Vectorized<T> log1p_(const Vectorized<T>& x) { return x.log1p(); }
// float: tanh|x| = (1 - e^{-2|x|}) / (1 + e^{-2|x|}) with the inlined exp (absolute error
// ~1e-7, no overflow for any x); double: Sleef's tanh.
inline Vectorized<float> tanh_(const Vectorized<float>& x) {
  const Vectorized<float> t = (x.abs() * Vectorized<float>(-2.f)).exp_u20();
  const Vectorized<float> mag = (Vectorized<float>(1.f) - t) / (Vectorized<float>(1.f) + t);
  // copy the sign of x onto the magnitude
  const Vectorized<float> sign_bit(-0.f);
  return (x & sign_bit) | mag;
}
inline Vectorized<double> tanh_(const Vectorized<double>& x) { return x.tanh(); }
template <typename T>
inline Vectorized<T> abs_(const Vectorized<T>& x) { return x.abs(); }
template <typename T>
inline Vectorized<T> max_(const Vectorized<T>& a, const Vectorized<T>& b) { return maximum(a, b); }
template <typename T>
inline Vectorized<T> min_(const Vectorized<T>& a, const Vectorized<T>& b) { return minimum(a, b); }
// log1p(t) for t in [0, 1]. float: log1p(t) = 2 atanh(s), s = t / (2 + t) in [0, 1/3], by its
// odd series to s^13 (truncation < 2e-8 relative), inline; double: Sleef's log1p.
inline Vectorized<float> log1p_unit_(const Vectorized<float>& t) {
  using V = Vectorized<float>;
  const V s = t / (V(2.f) + t);
  const V s2 = s * s;
  V p(1.f / 13);
  p = at::vec::fmadd(p, s2, V(1.f / 11));
  p = at::vec::fmadd(p, s2, V(1.f / 9));
  p = at::vec::fmadd(p, s2, V(1.f / 7));
  p = at::vec::fmadd(p, s2, V(1.f / 5));
  p = at::vec::fmadd(p, s2, V(1.f / 3));
  p = at::vec::fmadd(p, s2, V(1.f));
  return V(2.f) * s * p;
}
inline Vectorized<double> log1p_unit_(const Vectorized<double>& t) { return t.log1p(); }

// mask lanes are all-ones (true) or zero, as produced by Vectorized's comparison operators.
template <typename T>
inline Vectorized<T> where_(const Vectorized<T>& mask, const Vectorized<T>& a,
                            const Vectorized<T>& b) {
  return Vectorized<T>::blendv(b, a, mask);
}

}  // namespace CPU_CAPABILITY
}  // namespace at::vec
