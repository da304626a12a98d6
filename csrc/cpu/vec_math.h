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
// mask lanes are all-ones (true) or zero, as produced by Vectorized's comparison operators.
template <typename T>
inline Vectorized<T> where_(const Vectorized<T>& mask, const Vectorized<T>& a,
                            const Vectorized<T>& b) {
  return Vectorized<T>::blendv(b, a, mask);
}

}  // namespace CPU_CAPABILITY
}  // namespace at::vec
