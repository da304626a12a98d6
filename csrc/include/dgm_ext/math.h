// Per-element math of every dgm_ext op, written once.
//
// Each formula is a template over the value type V, instantiated with
//   - float / double       : scalar CPU loops and CUDA kernels (__host__ __device__), and
//   - at::vec::Vectorized  : the SIMD CPU loops (cpu/vec_math.h supplies the primitives).
// Formulas only use the primitives below (exp_, log_, ..., where_) and arithmetic, so the CPU
// and GPU results cannot drift apart. Torch-free on purpose (see macros.h).
#pragma once
#include <cmath>

#include "dgm_ext/macros.h"

namespace dgm_ext {
namespace math {

// ---- scalar primitives --------------------------------------------------------------------
#if DGM_DEVICE_CODE
#define DGM_UNARY(name, f32, f64)                     \
  DGM_HD float name(float x) { return ::f32(x); }   \
  DGM_HD double name(double x) { return ::f64(x); }
#else
#define DGM_UNARY(name, f32, f64)                          \
  DGM_HD float name(float x) { return std::f64(x); }     \
  DGM_HD double name(double x) { return std::f64(x); }
#endif
DGM_UNARY(exp_, expf, exp)
DGM_UNARY(log_, logf, log)
DGM_UNARY(log1p_, log1pf, log1p)
// log1p for arguments in [0, 1] (SIMD versions may use a faster series there).
DGM_UNARY(log1p_unit_, log1pf, log1p)
DGM_UNARY(tanh_, tanhf, tanh)
DGM_UNARY(abs_, fabsf, fabs)
#undef DGM_UNARY

// Non-template scalar overloads, so the SIMD overloads (cpu/vec_math.h) never compete.
#define DGM_SCALAR_OPS(S)                                     \
  DGM_HD S max_(S a, S b) { return a > b ? a : b; }           \
  DGM_HD S min_(S a, S b) { return a < b ? a : b; }           \
  DGM_HD S where_(bool c, S a, S b) { return c ? a : b; }
DGM_SCALAR_OPS(float)
DGM_SCALAR_OPS(double)
#undef DGM_SCALAR_OPS

// ---- numerically stable building blocks ---------------------------------------------------
constexpr double kLog2Pi = 1.8378770664093454835606594728112;  // log(2*pi)
constexpr double kHalfLog2Pi = 0.91893853320467274178032973640562;

// log(1 + e^l) without overflow for any l.
template <typename V>
DGM_HD V softplus(V l) {
  return max_(l, V(0)) + log1p_unit_(exp_(-abs_(l)));
}

// 1 / (1 + e^-l) without overflow for any l.
template <typename V>
DGM_HD V sigmoid(V l) {
  const V e = exp_(-abs_(l));
  return where_(l >= V(0), V(1), e) / (V(1) + e);
}

// Shifts z up to z >= 10 (z <- z + n) and returns prod_{i<n}(z_0 + i) through `prod` and
// sum_{i<n} 1/(z_0 + i) as num/den, branch-free so it vectorises.
template <typename V>
DGM_HD void gamma_shift(V& z, V& prod, V& recip_num) {
  prod = V(1);
  recip_num = V(0);
  for (int i = 0; i < 10; ++i) {
    const auto small = z < V(10);
    // num/prod + 1/z = (num*z + prod) / (prod*z)
    recip_num = where_(small, recip_num * z + prod, recip_num);
    prod = where_(small, prod * z, prod);
    z = where_(small, z + V(1), z);
  }
}

// log Gamma(x) for x > 0: recurrence to x >= 10 then Stirling's series (|error| < 1e-14 rel.).
template <typename V>
DGM_HD V lgamma_pos(V x) {
  V z = x, prod, num;
  gamma_shift(z, prod, num);
  const V r = V(1) / z;
  const V r2 = r * r;
  const V series =
      r * (V(1.0 / 12) -
           r2 * (V(1.0 / 360) - r2 * (V(1.0 / 1260) - r2 * (V(1.0 / 1680) - r2 * V(1.0 / 1188)))));
  return (z - V(0.5)) * log_(z) - z + V(kHalfLog2Pi) + series - log_(prod);
}

// digamma(x) for x > 0, same scheme (asymptotic series after the recurrence).
template <typename V>
DGM_HD V digamma_pos(V x) {
  V z = x, prod, num;
  gamma_shift(z, prod, num);
  const V r = V(1) / z;
  const V r2 = r * r;
  const V series =
      r2 * (V(1.0 / 12) -
            r2 * (V(1.0 / 120) - r2 * (V(1.0 / 252) - r2 * (V(1.0 / 240) - r2 * V(1.0 / 132)))));
  return log_(z) - V(0.5) * r - series - num / prod;
}

// ---- Bernoulli: x log s(l) + (1-x) log s(-l) = x l - softplus(l) ---------------------------
template <typename V>
DGM_HD V bernoulli_logp(V l, V x) {
  return x * l - softplus(l);
}
template <typename V>
DGM_HD void bernoulli_grad(V l, V x, V g, V& g_l, V& g_x) {
  g_l = g * (x - sigmoid(l));
  g_x = g * l;
}

// ---- Gaussian: log N(x; m, e^lv) --------------------------------------------------------
template <typename V>
DGM_HD V gaussian_logp(V x, V m, V lv) {
  const V d = x - m;
  return V(-0.5) * (V(kLog2Pi) + lv + d * d * exp_(-lv));
}
template <typename V>
DGM_HD void gaussian_grad(V x, V m, V lv, V g, V& g_x, V& g_m, V& g_lv) {
  const V d = x - m;
  const V di = d * exp_(-lv);
  g_x = -g * di;
  g_m = g * di;
  g_lv = V(0.5) * g * (d * di - V(1));
}

// ---- Beta: log Beta(clamp(x, eps, 1-eps); a, b) -----------------------------------------
template <typename V>
DGM_HD V beta_logp(V x, V a, V b, V eps) {
  const V xc = min_(max_(x, eps), V(1) - eps);
  const V lbeta = lgamma_pos(a) + lgamma_pos(b) - lgamma_pos(a + b);
  return (a - V(1)) * log_(xc) + (b - V(1)) * log1p_(-xc) - lbeta;
}
template <typename V>
DGM_HD void beta_grad(V x, V a, V b, V eps, V g, V& g_x, V& g_a, V& g_b) {
  const V hi = V(1) - eps;
  const V xc = min_(max_(x, eps), hi);
  const V psi_ab = digamma_pos(a + b);
  g_a = g * (log_(xc) - digamma_pos(a) + psi_ab);
  g_b = g * (log1p_(-xc) - digamma_pos(b) + psi_ab);
  // clamp passes the gradient inside [eps, 1-eps] (both ends included), like torch.clamp.
  const V inside_grad = g * ((a - V(1)) / xc - (b - V(1)) / (V(1) - xc));
  g_x = where_(x >= eps, where_(x <= hi, inside_grad, V(0)), V(0));
}

// ---- KL(N(m, e^lv) || N(0, 1)) ------------------------------------------------------------
template <typename V>
DGM_HD V kl_std(V m, V lv) {
  return V(0.5) * (m * m + exp_(lv) - V(1) - lv);
}
template <typename V>
DGM_HD void kl_std_grad(V m, V lv, V g, V& g_m, V& g_lv) {
  g_m = g * m;
  g_lv = V(0.5) * g * (exp_(lv) - V(1));
}

// ---- KL(N(mq, e^lvq) || N(mp, e^lvp)) -----------------------------------------------------
template <typename V>
DGM_HD V kl_normal(V mq, V lvq, V mp, V lvp) {
  const V d = mq - mp;
  return V(0.5) * (lvp - lvq + exp_(lvq - lvp) + d * d * exp_(-lvp) - V(1));
}
template <typename V>
DGM_HD void kl_normal_grad(V mq, V lvq, V mp, V lvp, V g, V& g_mq, V& g_lvq, V& g_mp, V& g_lvp) {
  const V d = mq - mp;
  const V dip = d * exp_(-lvp);
  const V ratio = exp_(lvq - lvp);
  g_mq = g * dip;
  g_mp = -g_mq;
  g_lvq = V(0.5) * g * (ratio - V(1));
  g_lvp = V(0.5) * g * (V(1) - ratio - d * dip);
}

// ---- reparameterisation: z = m + e^(lv/2) eps ---------------------------------------------
template <typename V>
DGM_HD V reparam(V m, V lv, V eps) {
  return m + exp_(V(0.5) * lv) * eps;
}
template <typename V>
DGM_HD void reparam_grad(V lv, V eps, V g, V& g_m, V& g_lv, V& g_eps) {
  const V sd = exp_(V(0.5) * lv);
  g_m = g;
  g_eps = g * sd;
  g_lv = V(0.5) * g_eps * eps;
}

// ---- affine coupling ----------------------------------------------------------------------
// forward: y = m x + (1-m)(x e^s + t), logdet term (1-m) s
// reverse: y = m x + (1-m)(x - t) e^-s, logdet term -(1-m) s
template <typename V>
DGM_HD V coupling(V x, V s, V t, V m, bool reverse, V& logdet_term) {
  const V om = V(1) - m;
  if (reverse) {
    logdet_term = -om * s;
    return m * x + om * (x - t) * exp_(-s);
  }
  logdet_term = om * s;
  return m * x + om * (x * exp_(s) + t);
}
template <typename V>
DGM_HD void coupling_grad(V x, V s, V t, V m, bool reverse, V g_y, V g_ld, V& g_x, V& g_s,
                          V& g_t) {
  const V om = V(1) - m;
  if (reverse) {
    const V e = exp_(-s);
    g_x = g_y * (m + om * e);
    g_s = om * (-g_y * (x - t) * e - g_ld);
    g_t = -g_y * om * e;
  } else {
    const V e = exp_(s);
    g_x = g_y * (m + om * e);
    g_s = om * (g_y * x * e + g_ld);
    g_t = g_y * om;
  }
}

// ---- planar flow layer: z <- z + u tanh(w.z + b) -----------------------------------------
// Given the pre-activation a = w.z + b and uw = u.w: h = tanh(a) and the log-det term
// log|1 + (1 - h^2) uw|.
template <typename V>
DGM_HD V planar_det(V h, V uw) {
  return V(1) + (V(1) - h * h) * uw;
}
template <typename V>
DGM_HD V planar_logdet_term(V h, V uw) {
  return log_(abs_(planar_det(h, uw)));
}
// Backward of one layer. In: gz_dot_u = g_z.u, upstream g_ld, h, uw. Out: g_a (gradient of the
// pre-activation) and coef = g_ld h' / det (so that dL/du += coef w, dL/dw += coef u).
template <typename V>
DGM_HD void planar_layer_grad(V gz_dot_u, V g_ld, V h, V uw, V& g_a, V& coef) {
  const V hp = V(1) - h * h;  // tanh'
  const V det = V(1) + hp * uw;
  const V gdet = g_ld / det;
  g_a = gz_dot_u * hp - V(2) * gdet * uw * h * hp;
  coef = gdet * hp;
}
// Backward of one layer at element j, given the layer's h, g_a and coef (planar_layer_grad):
// z holds z_k and becomes z_{k-1} = z_k - u h; g_z holds dL/dz_k and becomes dL/dz_{k-1} =
// g_z + g_a w; g_u = g_z h + coef w and g_w = g_a z_{k-1} + coef u are this element's terms
// of dL/du and dL/dw.
template <typename V>
DGM_HD void planar_elem_grad(V u, V w, V h, V g_a, V coef, V& z, V& g_z, V& g_u, V& g_w) {
  const V z_prev = z - u * h;
  g_u = g_z * h + coef * w;
  g_w = g_a * z_prev + coef * u;
  g_z = g_z + g_a * w;
  z = z_prev;
}

}  // namespace math
}  // namespace dgm_ext
