// Device-independent op frontends: argument checks, broadcasting, output allocation and the
// filling of each op's parameter block. A Backend (CPU in cpu/bindings_cpu.cpp, CUDA in
// cuda/bindings_cuda.cpp) supplies:
//   static constexpr bool kAllowHalf;                  // float16/bfloat16 accepted
//   template <class F> static void dispatch(at::ScalarType, const char* op, F f);
//       // calls f(static_cast<T*>(nullptr)) for the storage type T of the dtype
//   template <class T> static void <kernel>(const <Op>Params<T>&);   // see cpu/kernels.h
//   static G before_launch(const at::Tensor& like);  // G: void, or a guard object (e.g. the
//       // CUDA device guard) that the frontend keeps alive until the kernels are enqueued
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <type_traits>
#include <vector>

#include "prepare.h"

namespace dgm_ext::frontend {

using at::Tensor;

// Gradient buffer of the full broadcast shape when requested, else an empty tensor.
inline Tensor grad_buffer(bool needed, at::IntArrayRef shape, const Tensor& like) {
  return needed ? at::empty(shape, like.options()) : at::empty({0}, like.options());
}

inline Tensor row_vector(const Tensor& grad, const RowPrep& prep, const char* op) {
  DGM_CHECK_VALUE(grad.sizes().vec() == prep.batch_shape, "dgm_ext.", op,
                  ": 'grad' must have the batch shape ", prep.batch_shape,
                  ", got ", grad.sizes());
  return grad.contiguous();
}

// Calls B::before_launch and keeps its result (a device guard on CUDA) for the caller's scope;
// a void before_launch yields an empty placeholder.
struct NoGuard {};
template <class B>
auto launch_guard(const Tensor& like) {
  if constexpr (std::is_void_v<decltype(B::before_launch(like))>) {
    B::before_launch(like);
    return NoGuard{};
  } else {
    return B::before_launch(like);  // a prvalue: no copy or move of the guard
  }
}

template <class B>
void checks_floating(const char* op, const std::vector<NamedTensor>& args) {
  check_floating(args[0], op, B::kAllowHalf);
  for (size_t i = 1; i < args.size(); ++i) check_like(args[i], args[0], op);
}

// Runs body(T*) for the storage type T of `like`, under the backend's device guard.
template <class B, class F>
void launch(const char* op, const Tensor& like, F&& body) {
  [[maybe_unused]] const auto device_guard = launch_guard<B>(like);
  B::dispatch(like.scalar_type(), op, body);
}

// Forward of a row-reduction op (one value per row of (*B, D) inputs): checks, broadcasting,
// a zeroed (*B) output, then body(T*, prep, out) fills the params and runs the kernel.
template <class B, class F>
Tensor reduce_forward(const char* op, const std::vector<NamedTensor>& args, F&& body) {
  checks_floating<B>(op, args);
  RowPrep prep = prepare_rows(op, args, 1);
  Tensor out = at::zeros(prep.batch_shape, args[0].tensor.options());
  if (prep.layout.rows > 0 && prep.layout.cols > 0) {
    launch<B>(op, args[0].tensor, [&](auto* tag) { body(tag, prep, out); });
  }
  return out;
}

// Backward of a row-reduction op: `args` are the op's inputs followed by the (*B) gradient;
// returns N gradient buffers of the broadcast shape (empty where not needed), filled by
// body(T*, prep, grad_rows, grads).
template <class B, size_t N, class F>
std::array<Tensor, N> reduce_backward(const char* op, const std::vector<NamedTensor>& args,
                                      std::array<bool, N> needs, F&& body) {
  checks_floating<B>(op, args);
  const std::vector<NamedTensor> inputs(args.begin(), args.end() - 1);
  RowPrep prep = prepare_rows(op, inputs, 1);
  Tensor g = row_vector(args.back().tensor, prep, op);
  const Tensor& like = args[0].tensor;
  std::array<Tensor, N> grads;
  bool any = false;
  for (size_t i = 0; i < N; ++i) {
    grads[i] = grad_buffer(needs[i], prep.full_shape, like);
    any = any || needs[i];
  }
  if (prep.layout.rows > 0 && prep.layout.cols > 0 && any) {
    launch<B>(op, like, [&](auto* tag) { body(tag, prep, g, grads); });
  }
  return grads;
}

// ---------------------------------------------------------------- Bernoulli
template <class B>
Tensor bernoulli_log_prob(const Tensor& logits, const Tensor& x) {
  check_floating({"logits", logits}, "bernoulli_log_prob", B::kAllowHalf);  // dtype errors first
  DGM_CHECK_VALUE(logits.dim() >= 1, "dgm_ext.bernoulli_log_prob: 'logits' must have at ",
                  "least 1 dimension (*B, D), got a scalar");
  return reduce_forward<B>(
      "bernoulli_log_prob", {{"logits", logits}, {"x", x}},
      [](auto* tag, const RowPrep& prep, Tensor& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        BernoulliParams<T> p;
        p.layout = prep.layout;
        p.logits = cptr<T>(prep.inputs[0]);
        p.x = cptr<T>(prep.inputs[1]);
        p.out = out.mutable_data_ptr<T>();
        B::bernoulli_fwd(p);
      });
}

template <class B>
std::tuple<Tensor, Tensor> bernoulli_log_prob_backward(const Tensor& grad, const Tensor& logits,
                                                       const Tensor& x,
                                                       std::array<bool, 2> needs) {
  const auto gs = reduce_backward<B>(
      "bernoulli_log_prob_backward", {{"logits", logits}, {"x", x}, {"grad", grad}}, needs,
      [](auto* tag, const RowPrep& prep, const Tensor& g, std::array<Tensor, 2>& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        BernoulliParams<T> p;
        p.layout = prep.layout;
        p.logits = cptr<T>(prep.inputs[0]);
        p.x = cptr<T>(prep.inputs[1]);
        p.grad = cptr<T>(g);
        p.grad_logits = opt_ptr<T>(out[0]);
        p.grad_x = opt_ptr<T>(out[1]);
        B::bernoulli_bwd(p);
      });
  return {gs[0], gs[1]};
}

// ---------------------------------------------------------------- Gaussian
template <class B>
Tensor gaussian_log_prob(const Tensor& x, const Tensor& mean, const Tensor& logvar) {
  return reduce_forward<B>(
      "gaussian_log_prob", {{"x", x}, {"mean", mean}, {"logvar", logvar}},
      [](auto* tag, const RowPrep& prep, Tensor& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        GaussianParams<T> p;
        p.layout = prep.layout;
        p.x = cptr<T>(prep.inputs[0]);
        p.mean = cptr<T>(prep.inputs[1]);
        p.logvar = cptr<T>(prep.inputs[2]);
        p.out = out.mutable_data_ptr<T>();
        B::gaussian_fwd(p);
      });
}

template <class B>
std::tuple<Tensor, Tensor, Tensor> gaussian_log_prob_backward(const Tensor& grad, const Tensor& x,
                                                              const Tensor& mean,
                                                              const Tensor& logvar,
                                                              std::array<bool, 3> needs) {
  const auto gs = reduce_backward<B>(
      "gaussian_log_prob_backward",
      {{"x", x}, {"mean", mean}, {"logvar", logvar}, {"grad", grad}}, needs,
      [](auto* tag, const RowPrep& prep, const Tensor& g, std::array<Tensor, 3>& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        GaussianParams<T> p;
        p.layout = prep.layout;
        p.x = cptr<T>(prep.inputs[0]);
        p.mean = cptr<T>(prep.inputs[1]);
        p.logvar = cptr<T>(prep.inputs[2]);
        p.grad = cptr<T>(g);
        p.grad_x = opt_ptr<T>(out[0]);
        p.grad_mean = opt_ptr<T>(out[1]);
        p.grad_logvar = opt_ptr<T>(out[2]);
        B::gaussian_bwd(p);
      });
  return {gs[0], gs[1], gs[2]};
}

// ---------------------------------------------------------------- Beta
inline void check_eps(double eps, const char* op) {
  DGM_CHECK_VALUE(eps >= 0.0 && eps < 0.5, "dgm_ext.", op, ": 'eps' must be in [0, 0.5), got ",
                  eps);
}

template <class B>
Tensor beta_log_prob(const Tensor& x, const Tensor& alpha, const Tensor& beta, double eps) {
  check_eps(eps, "beta_log_prob");
  return reduce_forward<B>(
      "beta_log_prob", {{"x", x}, {"alpha", alpha}, {"beta", beta}},
      [eps](auto* tag, const RowPrep& prep, Tensor& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        BetaParams<T> p;
        p.layout = prep.layout;
        p.x = cptr<T>(prep.inputs[0]);
        p.alpha = cptr<T>(prep.inputs[1]);
        p.beta = cptr<T>(prep.inputs[2]);
        p.eps = eps;
        p.out = out.mutable_data_ptr<T>();
        B::beta_fwd(p);
      });
}

template <class B>
std::tuple<Tensor, Tensor, Tensor> beta_log_prob_backward(const Tensor& grad, const Tensor& x,
                                                          const Tensor& alpha, const Tensor& beta,
                                                          double eps, std::array<bool, 3> needs) {
  check_eps(eps, "beta_log_prob_backward");
  const auto gs = reduce_backward<B>(
      "beta_log_prob_backward", {{"x", x}, {"alpha", alpha}, {"beta", beta}, {"grad", grad}},
      needs, [eps](auto* tag, const RowPrep& prep, const Tensor& g, std::array<Tensor, 3>& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        BetaParams<T> p;
        p.layout = prep.layout;
        p.x = cptr<T>(prep.inputs[0]);
        p.alpha = cptr<T>(prep.inputs[1]);
        p.beta = cptr<T>(prep.inputs[2]);
        p.eps = eps;
        p.grad = cptr<T>(g);
        p.grad_x = opt_ptr<T>(out[0]);
        p.grad_alpha = opt_ptr<T>(out[1]);
        p.grad_beta = opt_ptr<T>(out[2]);
        B::beta_bwd(p);
      });
  return {gs[0], gs[1], gs[2]};
}

// ---------------------------------------------------------------- Categorical
// Validates class indices against [0, K): one reduction, needed so that no kernel ever reads
// outside a row of logits.
inline void check_class_indices(const Tensor& x, int64_t K, const char* op) {
  if (x.numel() == 0) return;
  auto [mn, mx] = at::aminmax(x);
  const int64_t lo = mn.item<int64_t>(), hi = mx.item<int64_t>();
  DGM_CHECK_VALUE(lo >= 0 && hi < K, "dgm_ext.", op,
                  ": argument 'x' holds class indices in [", lo, ", ", hi,
                  "] but 'logits' has K = ", K, " classes; indices must lie in [0, ", K, ")");
}

struct CategoricalPrep {
  RowPrep rows;
  Tensor logits;  // classes contiguous
  int64_t K;
};

template <class B>
CategoricalPrep categorical_prepare(const Tensor& logits, const Tensor& x, const char* op) {
  check_floating({"logits", logits}, op, B::kAllowHalf);
  check_device({"x", x}, {"logits", logits}, op);
  DGM_CHECK_TYPE(x.scalar_type() == at::kLong, "dgm_ext.", op,
                 ": argument 'x' must be an int64 tensor of class indices, got ",
                 x.scalar_type());
  DGM_CHECK_VALUE(logits.dim() >= 2, "dgm_ext.", op,
                  ": 'logits' must have shape (*B, D, K), got ", logits.sizes());
  DGM_CHECK_VALUE(x.dim() >= 1, "dgm_ext.", op, ": 'x' must have shape (*B, D), got a scalar");
  const int64_t K = logits.size(-1);
  DGM_CHECK_VALUE(K >= 1, "dgm_ext.", op, ": 'logits' must have at least one class (K >= 1)");
  // Rows over (*B), columns over D; each column's K class logits are contiguous.
  Tensor l = logits.stride(-1) == 1 ? logits : logits.contiguous();
  Tensor l0 = l.select(-1, 0);
  const std::vector<int64_t> full = broadcast_named(op, {{"logits", l0}, {"x", x}});
  const int64_t nd = static_cast<int64_t>(full.size());
  std::vector<int64_t> full_k = full;
  full_k.push_back(K);
  Tensor lk = left_pad(l, nd + 1).expand(full_k);
  Tensor xe = left_pad(x, nd).expand(full);
  int64_t batch_dims = 0;
  for (int64_t d = 0; d + 1 < nd; ++d) batch_dims += full[d] > 1;
  if (batch_dims > kMaxRowDims) {  // flatten the batch: copies, but never happens in practice
    lk = lk.contiguous();
    xe = xe.contiguous();
  }
  RowPrep prep;
  prep.full_shape = full;
  prep.batch_shape.assign(full.begin(), full.end() - 1);
  prep.layout.cols = full.back();
  prep.layout.rows = 1;
  for (int64_t d = 0; d + 1 < nd; ++d) prep.layout.rows *= full[d];
  std::vector<Tensor> expanded{lk.select(-1, 0), xe};
  prep.layout.col_stride[0] = expanded[0].stride(-1);
  prep.layout.col_stride[1] = expanded[1].stride(-1);
  if (prep.layout.rows > 0 && prep.layout.cols > 0) fill_row_index(prep.layout, expanded, 1);
  prep.inputs = expanded;
  check_class_indices(x, K, op);
  return {std::move(prep), l, K};
}

template <class B>
std::tuple<Tensor, Tensor> categorical_log_prob(const Tensor& logits, const Tensor& x) {
  const char* op = "categorical_log_prob";
  CategoricalPrep c = categorical_prepare<B>(logits, x, op);
  Tensor out = at::zeros(c.rows.batch_shape, logits.options());
  Tensor lse = at::empty(c.rows.full_shape, logits.options());
  if (c.rows.layout.rows == 0 || c.rows.layout.cols == 0) return {out, lse};
  launch<B>(op, logits, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    CategoricalParams<T> p;
    p.layout = c.rows.layout;
    p.num_classes = c.K;
    p.logits = cptr<T>(c.rows.inputs[0]);
    p.x = cptr<int64_t>(c.rows.inputs[1]);
    p.out = out.mutable_data_ptr<T>();
    p.lse = lse.mutable_data_ptr<T>();
    B::categorical_fwd(p);
  });
  return {out, lse};
}

template <class B>
Tensor categorical_log_prob_backward(const Tensor& grad, const Tensor& logits, const Tensor& x,
                                     const Tensor& lse) {
  const char* op = "categorical_log_prob_backward";
  CategoricalPrep c = categorical_prepare<B>(logits, x, op);
  check_like({"grad", grad}, {"logits", logits}, op);
  check_like({"lse", lse}, {"logits", logits}, op);
  Tensor g = row_vector(grad, c.rows, op);
  DGM_CHECK_VALUE(lse.sizes().vec() == c.rows.full_shape, "dgm_ext.", op,
                  ": 'lse' must have shape ", c.rows.full_shape);
  Tensor lse_c = lse.contiguous();
  std::vector<int64_t> shape = c.rows.full_shape;
  shape.push_back(c.K);
  Tensor gl = at::empty(shape, logits.options());
  if (c.rows.layout.rows == 0 || c.rows.layout.cols == 0) return gl;
  launch<B>(op, logits, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    CategoricalParams<T> p;
    p.layout = c.rows.layout;
    p.num_classes = c.K;
    p.logits = cptr<T>(c.rows.inputs[0]);
    p.x = cptr<int64_t>(c.rows.inputs[1]);
    p.grad = cptr<T>(g);
    p.lse_in = cptr<T>(lse_c);
    p.grad_logits = gl.mutable_data_ptr<T>();
    B::categorical_bwd(p);
  });
  return gl;
}

// ---------------------------------------------------------------- KL divergences
template <class B>
Tensor kl_normal_std(const Tensor& mu, const Tensor& logvar) {
  return reduce_forward<B>("kl_normal_std", {{"mu", mu}, {"logvar", logvar}},
                           [](auto* tag, const RowPrep& prep, Tensor& out) {
                             using T = std::remove_pointer_t<decltype(tag)>;
                             KlStdParams<T> p;
                             p.layout = prep.layout;
                             p.mu = cptr<T>(prep.inputs[0]);
                             p.logvar = cptr<T>(prep.inputs[1]);
                             p.out = out.mutable_data_ptr<T>();
                             B::kl_std_fwd(p);
                           });
}

template <class B>
std::tuple<Tensor, Tensor> kl_normal_std_backward(const Tensor& grad, const Tensor& mu,
                                                  const Tensor& logvar,
                                                  std::array<bool, 2> needs) {
  const auto gs = reduce_backward<B>(
      "kl_normal_std_backward", {{"mu", mu}, {"logvar", logvar}, {"grad", grad}}, needs,
      [](auto* tag, const RowPrep& prep, const Tensor& g, std::array<Tensor, 2>& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        KlStdParams<T> p;
        p.layout = prep.layout;
        p.mu = cptr<T>(prep.inputs[0]);
        p.logvar = cptr<T>(prep.inputs[1]);
        p.grad = cptr<T>(g);
        p.grad_mu = opt_ptr<T>(out[0]);
        p.grad_logvar = opt_ptr<T>(out[1]);
        B::kl_std_bwd(p);
      });
  return {gs[0], gs[1]};
}

template <class B>
Tensor kl_normal(const Tensor& mu_q, const Tensor& logvar_q, const Tensor& mu_p,
                 const Tensor& logvar_p) {
  return reduce_forward<B>(
      "kl_normal",
      {{"mu_q", mu_q}, {"logvar_q", logvar_q}, {"mu_p", mu_p}, {"logvar_p", logvar_p}},
      [](auto* tag, const RowPrep& prep, Tensor& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        KlNormalParams<T> p;
        p.layout = prep.layout;
        p.mu_q = cptr<T>(prep.inputs[0]);
        p.logvar_q = cptr<T>(prep.inputs[1]);
        p.mu_p = cptr<T>(prep.inputs[2]);
        p.logvar_p = cptr<T>(prep.inputs[3]);
        p.out = out.mutable_data_ptr<T>();
        B::kl_normal_fwd(p);
      });
}

template <class B>
std::tuple<Tensor, Tensor, Tensor, Tensor> kl_normal_backward(
    const Tensor& grad, const Tensor& mu_q, const Tensor& logvar_q, const Tensor& mu_p,
    const Tensor& logvar_p, std::array<bool, 4> needs) {
  const auto gs = reduce_backward<B>(
      "kl_normal_backward",
      {{"mu_q", mu_q}, {"logvar_q", logvar_q}, {"mu_p", mu_p}, {"logvar_p", logvar_p},
       {"grad", grad}},
      needs, [](auto* tag, const RowPrep& prep, const Tensor& g, std::array<Tensor, 4>& out) {
        using T = std::remove_pointer_t<decltype(tag)>;
        KlNormalParams<T> p;
        p.layout = prep.layout;
        p.mu_q = cptr<T>(prep.inputs[0]);
        p.logvar_q = cptr<T>(prep.inputs[1]);
        p.mu_p = cptr<T>(prep.inputs[2]);
        p.logvar_p = cptr<T>(prep.inputs[3]);
        p.grad = cptr<T>(g);
        p.grad_mu_q = opt_ptr<T>(out[0]);
        p.grad_logvar_q = opt_ptr<T>(out[1]);
        p.grad_mu_p = opt_ptr<T>(out[2]);
        p.grad_logvar_p = opt_ptr<T>(out[3]);
        B::kl_normal_bwd(p);
      });
  return {gs[0], gs[1], gs[2], gs[3]};
}

// ---------------------------------------------------------------- reparameterisation
template <class B>
Tensor reparameterize(const Tensor& mu, const Tensor& logvar, const Tensor& eps) {
  const char* op = "reparameterize";
  const std::vector<NamedTensor> args{{"mu", mu}, {"logvar", logvar}, {"eps", eps}};
  checks_floating<B>(op, args);
  RowPrep prep = prepare_rows(op, args, 1);
  Tensor z = at::empty(prep.full_shape, mu.options());
  if (prep.layout.rows == 0 || prep.layout.cols == 0) return z;
  launch<B>(op, mu, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    ReparamParams<T> p;
    p.layout = prep.layout;
    p.mu = cptr<T>(prep.inputs[0]);
    p.logvar = cptr<T>(prep.inputs[1]);
    p.eps = cptr<T>(prep.inputs[2]);
    p.z = z.mutable_data_ptr<T>();
    B::reparam_fwd(p);
  });
  return z;
}

template <class B>
std::tuple<Tensor, Tensor, Tensor> reparameterize_backward(const Tensor& grad, const Tensor& mu,
                                                           const Tensor& logvar,
                                                           const Tensor& eps,
                                                           std::array<bool, 3> needs) {
  const char* op = "reparameterize_backward";
  const std::vector<NamedTensor> args{{"mu", mu}, {"logvar", logvar}, {"eps", eps}, {"grad", grad}};
  checks_floating<B>(op, args);
  RowPrep prep = prepare_rows(op, args, 1);
  DGM_CHECK_VALUE(grad.sizes().vec() == prep.full_shape, "dgm_ext.", op,
                  ": 'grad' must have the broadcast shape ", prep.full_shape);
  std::array<Tensor, 3> gs;
  for (int i = 0; i < 3; ++i) gs[i] = grad_buffer(needs[i], prep.full_shape, mu);
  if (prep.layout.rows == 0 || prep.layout.cols == 0 || !(needs[0] || needs[1] || needs[2]))
    return {gs[0], gs[1], gs[2]};
  launch<B>(op, mu, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    ReparamParams<T> p;
    p.layout = prep.layout;
    p.mu = cptr<T>(prep.inputs[0]);
    p.logvar = cptr<T>(prep.inputs[1]);
    p.eps = cptr<T>(prep.inputs[2]);
    p.grad = cptr<T>(prep.inputs[3]);
    p.grad_mu = opt_ptr<T>(gs[0]);
    p.grad_logvar = opt_ptr<T>(gs[1]);
    p.grad_eps = opt_ptr<T>(gs[2]);
    B::reparam_bwd(p);
  });
  return {gs[0], gs[1], gs[2]};
}

// ---------------------------------------------------------------- affine coupling
inline int64_t coupling_col_dims(const Tensor& x, const char* op) {
  DGM_CHECK_VALUE(x.dim() >= 2, "dgm_ext.", op, ": 'x' must have shape (N, ...) with at least",
                  " 2 dimensions, got ", x.sizes());
  return x.dim() - 1;
}

inline void check_coupling_shapes(const RowPrep& prep, const Tensor& x, const char* op) {
  DGM_CHECK_VALUE(prep.full_shape == x.sizes().vec(), "dgm_ext.", op,
                  ": 's', 't' and 'mask' must broadcast to the shape of 'x' ",
                  x.sizes(), ", but together they broadcast to ",
                  prep.full_shape);
}

template <class B>
std::tuple<Tensor, Tensor> affine_coupling(const Tensor& x, const Tensor& s, const Tensor& t,
                                           const Tensor& mask, bool reverse) {
  const char* op = "affine_coupling";
  const std::vector<NamedTensor> args{{"x", x}, {"s", s}, {"t", t}, {"mask", mask}};
  checks_floating<B>(op, args);
  RowPrep prep = prepare_rows(op, args, coupling_col_dims(x, op));
  check_coupling_shapes(prep, x, op);
  Tensor y = at::empty(prep.full_shape, x.options());
  Tensor logdet = at::zeros(prep.batch_shape, x.options());
  if (prep.layout.rows == 0 || prep.layout.cols == 0) return {y, logdet};
  launch<B>(op, x, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    CouplingParams<T> p;
    p.layout = prep.layout;
    p.reverse = reverse;
    p.x = cptr<T>(prep.inputs[0]);
    p.s = cptr<T>(prep.inputs[1]);
    p.t = cptr<T>(prep.inputs[2]);
    p.mask = cptr<T>(prep.inputs[3]);
    p.y = y.mutable_data_ptr<T>();
    p.logdet = logdet.mutable_data_ptr<T>();
    B::coupling_fwd(p);
  });
  return {y, logdet};
}

template <class B>
std::tuple<Tensor, Tensor, Tensor> affine_coupling_backward(
    const Tensor& grad_y, const Tensor& grad_logdet, const Tensor& x, const Tensor& s,
    const Tensor& t, const Tensor& mask, bool reverse, std::array<bool, 3> needs) {
  const char* op = "affine_coupling_backward";
  const std::vector<NamedTensor> args{{"x", x},       {"s", s},           {"t", t},
                                      {"mask", mask}, {"grad_y", grad_y}, {"grad_logdet", grad_logdet}};
  checks_floating<B>(op, args);
  RowPrep prep = prepare_rows(op, {args[0], args[1], args[2], args[3], args[4]},
                              coupling_col_dims(x, op));
  check_coupling_shapes(prep, x, op);
  Tensor gld = row_vector(grad_logdet, prep, op);
  std::array<Tensor, 3> gs;
  for (int i = 0; i < 3; ++i) gs[i] = grad_buffer(needs[i], prep.full_shape, x);
  if (prep.layout.rows == 0 || prep.layout.cols == 0 || !(needs[0] || needs[1] || needs[2]))
    return {gs[0], gs[1], gs[2]};
  launch<B>(op, x, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    CouplingParams<T> p;
    p.layout = prep.layout;
    p.reverse = reverse;
    p.x = cptr<T>(prep.inputs[0]);
    p.s = cptr<T>(prep.inputs[1]);
    p.t = cptr<T>(prep.inputs[2]);
    p.mask = cptr<T>(prep.inputs[3]);
    p.grad_y = cptr<T>(prep.inputs[4]);
    p.grad_logdet = cptr<T>(gld);
    p.grad_x = opt_ptr<T>(gs[0]);
    p.grad_s = opt_ptr<T>(gs[1]);
    p.grad_t = opt_ptr<T>(gs[2]);
    B::coupling_bwd(p);
  });
  return {gs[0], gs[1], gs[2]};
}

// ---------------------------------------------------------------- planar flow
inline void check_planar_shapes(const Tensor& z, const Tensor& u, const Tensor& w,
                                const Tensor& b, const char* op) {
  DGM_CHECK_VALUE(z.dim() == 2, "dgm_ext.", op, ": 'z' must have shape (N, d), got ",
                  z.sizes());
  DGM_CHECK_VALUE(u.dim() == 2 && u.size(1) == z.size(1), "dgm_ext.", op,
                  ": 'u' must have shape (K, d) with d = ", z.size(1), ", got ",
                  u.sizes());
  DGM_CHECK_VALUE(w.sizes() == u.sizes(), "dgm_ext.", op, ": 'w' must have the shape of 'u' ",
                  u.sizes(), ", got ", w.sizes());
  DGM_CHECK_VALUE(b.dim() == 1 && b.size(0) == u.size(0), "dgm_ext.", op,
                  ": 'b' must have shape (K,) with K = ", u.size(0), ", got ",
                  b.sizes());
}

template <class B>
std::tuple<Tensor, Tensor, Tensor> planar_flow(const Tensor& z, const Tensor& u, const Tensor& w,
                                               const Tensor& b) {
  const char* op = "planar_flow";
  checks_floating<B>(op, {{"z", z}, {"u", u}, {"w", w}, {"b", b}});
  check_planar_shapes(z, u, w, b, op);
  const Tensor zc = z.contiguous(), uc = u.contiguous(), wc = w.contiguous(), bc = b.contiguous();
  const int64_t n = z.size(0), d = z.size(1), K = u.size(0);
  Tensor z_out = at::empty({n, d}, z.options());
  Tensor logdet = at::zeros({n}, z.options());
  Tensor act = at::empty({n, K}, z.options());
  if (n == 0) return {z_out, logdet, act};
  if (K == 0 || d == 0) {
    z_out.copy_(z);
    return {z_out, logdet, act};
  }
  launch<B>(op, z, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    PlanarParams<T> p;
    p.n = n;
    p.d = d;
    p.k = K;
    p.z = cptr<T>(zc);
    p.u = cptr<T>(uc);
    p.w = cptr<T>(wc);
    p.b = cptr<T>(bc);
    p.z_out = z_out.mutable_data_ptr<T>();
    p.logdet = logdet.mutable_data_ptr<T>();
    p.act = act.mutable_data_ptr<T>();
    B::planar_fwd(p);
  });
  return {z_out, logdet, act};
}

template <class B>
std::tuple<Tensor, Tensor, Tensor, Tensor> planar_flow_backward(
    const Tensor& grad_z, const Tensor& grad_logdet, const Tensor& z_out, const Tensor& act,
    const Tensor& u, const Tensor& w, const Tensor& b) {
  const char* op = "planar_flow_backward";
  checks_floating<B>(op, {{"z_out", z_out}, {"grad_z", grad_z}, {"grad_logdet", grad_logdet},
                          {"act", act}, {"u", u}, {"w", w}, {"b", b}});
  check_planar_shapes(z_out, u, w, b, op);
  const int64_t n = z_out.size(0), d = z_out.size(1), K = u.size(0);
  DGM_CHECK_VALUE(grad_z.sizes() == z_out.sizes(), "dgm_ext.", op,
                  ": 'grad_z' must have shape ", z_out.sizes());
  DGM_CHECK_VALUE(grad_logdet.dim() == 1 && grad_logdet.size(0) == n, "dgm_ext.", op,
                  ": 'grad_logdet' must have shape (", n, ",)");
  DGM_CHECK_VALUE(act.dim() == 2 && act.size(0) == n && act.size(1) == K, "dgm_ext.",
                  op, ": 'act' must have shape (", n, ", ", K, ")");
  Tensor gz = at::empty({n, d}, z_out.options());
  Tensor gu = at::zeros({K, d}, z_out.options());
  Tensor gw = at::zeros({K, d}, z_out.options());
  Tensor gb = at::zeros({K}, z_out.options());
  if (n == 0) return {gz, gu, gw, gb};
  if (K == 0 || d == 0) {
    gz.copy_(grad_z);
    return {gz, gu, gw, gb};
  }
  const Tensor gzc = grad_z.contiguous(), gldc = grad_logdet.contiguous(),
               zoc = z_out.contiguous(), pc = act.contiguous(), uc = u.contiguous(),
               wc = w.contiguous(), bc = b.contiguous();
  launch<B>(op, z_out, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    PlanarParams<T> p;
    p.n = n;
    p.d = d;
    p.k = K;
    p.u = cptr<T>(uc);
    p.w = cptr<T>(wc);
    p.b = cptr<T>(bc);
    p.grad_z = cptr<T>(gzc);
    p.grad_logdet = cptr<T>(gldc);
    p.z_final = cptr<T>(zoc);
    p.act_in = cptr<T>(pc);
    p.grad_z_in = gz.mutable_data_ptr<T>();
    p.grad_u = gu.mutable_data_ptr<T>();
    p.grad_w = gw.mutable_data_ptr<T>();
    p.grad_b = gb.mutable_data_ptr<T>();
    B::planar_bwd(p);
  });
  return {gz, gu, gw, gb};
}

// ---------------------------------------------------------------- planar flow, per-row parameters
// z (*S, N, d); u, w (N, K, d); b (N, K): row i of the last batch dim of z uses parameters i,
// for every sample index of *S.
inline void check_planar_rows_shapes(const Tensor& z, const Tensor& u, const Tensor& w,
                                     const Tensor& b, const char* op, const char* z_name) {
  DGM_CHECK_VALUE(z.dim() >= 2, "dgm_ext.", op, ": '", z_name,
                  "' must have shape (*S, N, d), got ", z.sizes());
  const int64_t n = z.size(-2), d = z.size(-1);
  DGM_CHECK_VALUE(u.dim() == 3 && u.size(0) == n && u.size(2) == d, "dgm_ext.", op,
                  ": 'u' must have shape (N, K, d) with N = ", n, " and d = ", d, " from '",
                  z_name, "', got ", u.sizes());
  DGM_CHECK_VALUE(w.sizes() == u.sizes(), "dgm_ext.", op, ": 'w' must have the shape of 'u' ",
                  u.sizes(), ", got ", w.sizes());
  DGM_CHECK_VALUE(b.dim() == 2 && b.size(0) == n && b.size(1) == u.size(1), "dgm_ext.", op,
                  ": 'b' must have shape (N, K) = (", n, ", ", u.size(1), "), got ", b.sizes());
}

// The rows shape (*S, N) of z and the number of samples S = prod(*S).
inline std::vector<int64_t> planar_rows_shape(const Tensor& z, int64_t& samples) {
  samples = 1;
  for (int64_t i = 0; i + 2 < z.dim(); ++i) samples *= z.size(i);
  return std::vector<int64_t>(z.sizes().begin(), z.sizes().end() - 1);
}

template <class B>
std::tuple<Tensor, Tensor, Tensor> planar_flow_rows(const Tensor& z, const Tensor& u,
                                                    const Tensor& w, const Tensor& b) {
  const char* op = "planar_flow_rows";
  checks_floating<B>(op, {{"z", z}, {"u", u}, {"w", w}, {"b", b}});
  check_planar_rows_shapes(z, u, w, b, op, "z");
  const int64_t n = z.size(-2), d = z.size(-1), K = u.size(1);
  int64_t samples = 0;
  const std::vector<int64_t> rows = planar_rows_shape(z, samples);
  std::vector<int64_t> act_shape = rows;
  act_shape.push_back(K);
  Tensor z_out = at::empty(z.sizes(), z.options());
  Tensor logdet = at::zeros(rows, z.options());
  Tensor act = at::empty(act_shape, z.options());
  if (samples == 0 || n == 0) return {z_out, logdet, act};
  // The parameters are read in place for every sample: never expanded over *S.
  const Tensor zc = z.contiguous(), uc = u.contiguous(), wc = w.contiguous(), bc = b.contiguous();
  launch<B>(op, z, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    PlanarRowsParams<T> p;
    p.samples = samples;
    p.n = n;
    p.d = d;
    p.k = K;
    p.z = cptr<T>(zc);
    p.u = cptr<T>(uc);
    p.w = cptr<T>(wc);
    p.b = cptr<T>(bc);
    p.z_out = z_out.mutable_data_ptr<T>();
    p.logdet = logdet.mutable_data_ptr<T>();
    p.act = act.mutable_data_ptr<T>();
    B::planar_rows_fwd(p);
  });
  return {z_out, logdet, act};
}

// needs = (z, u, w, b). Gradients nobody asked for come back as empty tensors; the parameter
// gradients are summed over the samples *S by the kernel.
template <class B>
std::tuple<Tensor, Tensor, Tensor, Tensor> planar_flow_rows_backward(
    const Tensor& grad_z, const Tensor& grad_logdet, const Tensor& z_out, const Tensor& act,
    const Tensor& u, const Tensor& w, const Tensor& b, std::array<bool, 4> needs) {
  const char* op = "planar_flow_rows_backward";
  checks_floating<B>(op, {{"z_out", z_out}, {"grad_z", grad_z}, {"grad_logdet", grad_logdet},
                          {"act", act}, {"u", u}, {"w", w}, {"b", b}});
  check_planar_rows_shapes(z_out, u, w, b, op, "z_out");
  const int64_t n = z_out.size(-2), d = z_out.size(-1), K = u.size(1);
  int64_t samples = 0;
  const std::vector<int64_t> rows = planar_rows_shape(z_out, samples);
  std::vector<int64_t> act_shape = rows;
  act_shape.push_back(K);
  DGM_CHECK_VALUE(grad_z.sizes() == z_out.sizes(), "dgm_ext.", op,
                  ": 'grad_z' must have the shape of 'z_out' ", z_out.sizes(), ", got ",
                  grad_z.sizes());
  DGM_CHECK_VALUE(grad_logdet.sizes().vec() == rows, "dgm_ext.", op,
                  ": 'grad_logdet' must have shape ", rows, ", got ", grad_logdet.sizes());
  DGM_CHECK_VALUE(act.sizes().vec() == act_shape, "dgm_ext.", op, ": 'act' must have shape ",
                  act_shape, ", got ", act.sizes());
  const auto opts = z_out.options();
  Tensor gz = needs[0] ? at::empty(z_out.sizes(), opts) : at::empty({0}, opts);
  Tensor gu = needs[1] ? at::zeros(u.sizes(), opts) : at::empty({0}, opts);
  Tensor gw = needs[2] ? at::zeros(u.sizes(), opts) : at::empty({0}, opts);
  Tensor gb = needs[3] ? at::zeros(b.sizes(), opts) : at::empty({0}, opts);
  if (samples == 0 || n == 0 || !(needs[0] || needs[1] || needs[2] || needs[3]))
    return {gz, gu, gw, gb};
  const Tensor gzc = grad_z.contiguous(), gldc = grad_logdet.contiguous(),
               zoc = z_out.contiguous(), ac = act.contiguous(), uc = u.contiguous(),
               wc = w.contiguous(), bc = b.contiguous();
  launch<B>(op, z_out, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    PlanarRowsParams<T> p;
    p.samples = samples;
    p.n = n;
    p.d = d;
    p.k = K;
    p.u = cptr<T>(uc);
    p.w = cptr<T>(wc);
    p.b = cptr<T>(bc);
    p.grad_z = cptr<T>(gzc);
    p.grad_logdet = cptr<T>(gldc);
    p.z_final = cptr<T>(zoc);
    p.act_in = cptr<T>(ac);
    p.grad_z_in = opt_ptr<T>(gz);
    p.grad_u = opt_ptr<T>(gu);
    p.grad_w = opt_ptr<T>(gw);
    p.grad_b = opt_ptr<T>(gb);
    B::planar_rows_bwd(p);
  });
  return {gz, gu, gw, gb};
}

// Registers every op's frontend with a backend's kernels: one list for CPU and CUDA.
template <class B>
void register_ops(torch::Library& m) {
  m.impl("bernoulli_log_prob", &bernoulli_log_prob<B>);
  m.impl("bernoulli_log_prob_backward", &bernoulli_log_prob_backward<B>);
  m.impl("gaussian_log_prob", &gaussian_log_prob<B>);
  m.impl("gaussian_log_prob_backward", &gaussian_log_prob_backward<B>);
  m.impl("beta_log_prob", &beta_log_prob<B>);
  m.impl("beta_log_prob_backward", &beta_log_prob_backward<B>);
  m.impl("categorical_log_prob", &categorical_log_prob<B>);
  m.impl("categorical_log_prob_backward", &categorical_log_prob_backward<B>);
  m.impl("kl_normal_std", &kl_normal_std<B>);
  m.impl("kl_normal_std_backward", &kl_normal_std_backward<B>);
  m.impl("kl_normal", &kl_normal<B>);
  m.impl("kl_normal_backward", &kl_normal_backward<B>);
  m.impl("reparameterize", &reparameterize<B>);
  m.impl("reparameterize_backward", &reparameterize_backward<B>);
  m.impl("affine_coupling", &affine_coupling<B>);
  m.impl("affine_coupling_backward", &affine_coupling_backward<B>);
  m.impl("planar_flow", &planar_flow<B>);
  m.impl("planar_flow_backward", &planar_flow_backward<B>);
  m.impl("planar_flow_rows", &planar_flow_rows<B>);
  m.impl("planar_flow_rows_backward", &planar_flow_rows_backward<B>);
}

}  // namespace dgm_ext::frontend

