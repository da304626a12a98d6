// Autograd for every dgm_ext op, in C++ (one kernel per op under the Autograd dispatch key).
//
// Each op's forward redispatches below autograd to the backend kernel (CPU, CUDA, or the fake
// kernel while torch.compile traces) and its backward calls the op's own `*_backward` op
// through the dispatcher, with a mask of the input gradients autograd will use. Keeping this
// in C++ instead of torch.library.register_autograd removes the Python autograd path
// (~0.2 ms of host time per fwd+bwd), which at training sizes cost more than the kernels.
// Broadcast inputs get their gradient summed back to their own shape (at::sum_to), also for
// symbolic shapes. Outputs a loss does not use reach the multi-output backwards as undefined
// tensors (set_materialize_grads(false)); zeros are made there only for the one needed.
#include <ATen/ExpandUtils.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace dgm_ext {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <class Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The gradient of a broadcast input: summed over the broadcast dims (undefined if unneeded).
Tensor reduce_to(const Tensor& grad, const Tensor& input, bool need) {
  if (!need || !grad.defined()) return Tensor();
  if (grad.sym_sizes().equals(input.sym_sizes())) return grad;
  return at::sum_to(grad, input.sym_sizes());
}

template <size_t N>
std::array<bool, N> needs(AutogradContext* ctx) {
  std::array<bool, N> out{};
  for (size_t i = 0; i < N; ++i) out[i] = ctx->needs_input_grad(i);
  return out;
}

// ------------------------------------------------------------------ two-input reductions
// bernoulli_log_prob(logits, x), kl_normal_std(mu, logvar): (*B, D) x2 -> (*B)
template <const char* kName, const char* kBackward>
struct BinaryReduction : torch::autograd::Function<BinaryReduction<kName, kBackward>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op = handle<Tensor(const Tensor&, const Tensor&)>(kName);
    ctx->save_for_backward({a, b});
    return op.call(a, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = handle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&,
                                                       const Tensor&, std::array<bool, 2>)>(
        kBackward);
    const auto saved = ctx->get_saved_variables();
    const auto need = needs<2>(ctx);
    auto [ga, gb] = op.call(grads[0], saved[0], saved[1], need);
    return {reduce_to(ga, saved[0], need[0]), reduce_to(gb, saved[1], need[1])};
  }
};

constexpr char kBernoulli[] = "dgm_ext::bernoulli_log_prob";
constexpr char kBernoulliBwd[] = "dgm_ext::bernoulli_log_prob_backward";
constexpr char kKlStd[] = "dgm_ext::kl_normal_std";
constexpr char kKlStdBwd[] = "dgm_ext::kl_normal_std_backward";

Tensor bernoulli_log_prob(const Tensor& logits, const Tensor& x) {
  return BinaryReduction<kBernoulli, kBernoulliBwd>::apply(logits, x);
}

Tensor kl_normal_std(const Tensor& mu, const Tensor& logvar) {
  return BinaryReduction<kKlStd, kKlStdBwd>::apply(mu, logvar);
}

// ------------------------------------------------------------------ Gaussian
struct Gaussian : torch::autograd::Function<Gaussian> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& mean,
                        const Tensor& logvar) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op = handle<Tensor(const Tensor&, const Tensor&, const Tensor&)>(
        "dgm_ext::gaussian_log_prob");
    ctx->save_for_backward({x, mean, logvar});
    return op.call(x, mean, logvar);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        handle<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                  const Tensor&, std::array<bool, 3>)>(
            "dgm_ext::gaussian_log_prob_backward");
    const auto s = ctx->get_saved_variables();
    const auto need = needs<3>(ctx);
    auto [gx, gm, gl] = op.call(grads[0], s[0], s[1], s[2], need);
    return {reduce_to(gx, s[0], need[0]), reduce_to(gm, s[1], need[1]),
            reduce_to(gl, s[2], need[2])};
  }
};

// ------------------------------------------------------------------ Beta
struct Beta : torch::autograd::Function<Beta> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& alpha,
                        const Tensor& beta, double eps) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op = handle<Tensor(const Tensor&, const Tensor&, const Tensor&, double)>(
        "dgm_ext::beta_log_prob");
    ctx->save_for_backward({x, alpha, beta});
    ctx->saved_data["eps"] = eps;
    return op.call(x, alpha, beta, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        handle<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                  const Tensor&, double, std::array<bool, 3>)>(
            "dgm_ext::beta_log_prob_backward");
    const auto s = ctx->get_saved_variables();
    const auto need = needs<3>(ctx);
    auto [gx, ga, gb] = op.call(grads[0], s[0], s[1], s[2], ctx->saved_data["eps"].toDouble(),
                                need);
    return {reduce_to(gx, s[0], need[0]), reduce_to(ga, s[1], need[1]),
            reduce_to(gb, s[2], need[2]), Tensor()};
  }
};

// ------------------------------------------------------------------ Categorical
struct Categorical : torch::autograd::Function<Categorical> {
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& x) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op = handle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&)>(
        "dgm_ext::categorical_log_prob");
    auto [out, lse] = op.call(logits, x);
    ctx->save_for_backward({logits, x, lse});
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
            "dgm_ext::categorical_log_prob_backward");
    if (!ctx->needs_input_grad(0)) return {Tensor(), Tensor()};
    const auto s = ctx->get_saved_variables();
    return {reduce_to(op.call(grads[0], s[0], s[1], s[2]), s[0], true), Tensor()};
  }
};

// ------------------------------------------------------------------ KL between Gaussians
struct KlNormal : torch::autograd::Function<KlNormal> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu_q, const Tensor& lv_q,
                        const Tensor& mu_p, const Tensor& lv_p) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op =
        handle<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
            "dgm_ext::kl_normal");
    ctx->save_for_backward({mu_q, lv_q, mu_p, lv_p});
    return op.call(mu_q, lv_q, mu_p, lv_p);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Out = std::tuple<Tensor, Tensor, Tensor, Tensor>;
    static auto op = handle<Out(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, std::array<bool, 4>)>(
        "dgm_ext::kl_normal_backward");
    const auto s = ctx->get_saved_variables();
    const auto need = needs<4>(ctx);
    auto [a, b, c, d] = op.call(grads[0], s[0], s[1], s[2], s[3], need);
    return {reduce_to(a, s[0], need[0]), reduce_to(b, s[1], need[1]),
            reduce_to(c, s[2], need[2]), reduce_to(d, s[3], need[3])};
  }
};

// ------------------------------------------------------------------ reparameterize
struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static Tensor forward(AutogradContext* ctx, const Tensor& mu, const Tensor& logvar,
                        const Tensor& eps) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op = handle<Tensor(const Tensor&, const Tensor&, const Tensor&)>(
        "dgm_ext::reparameterize");
    ctx->save_for_backward({mu, logvar, eps});
    return op.call(mu, logvar, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        handle<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                  const Tensor&, std::array<bool, 3>)>(
            "dgm_ext::reparameterize_backward");
    const auto s = ctx->get_saved_variables();
    const auto need = needs<3>(ctx);
    Tensor g_mu = grads[0], g_lv, g_eps;
    if (need[1] || need[2]) {
      // dz/dmu = 1: mu's gradient is the incoming one, no kernel pass for it; unless that is
      // not dense (e.g. expanded by a sum or mean), when the kernel writes it in the same pass
      // rather than autograd copying it in another
      const bool mu_in_pass = need[0] && !grads[0].is_non_overlapping_and_dense();
      Tensor g_mu_pass;
      std::tie(g_mu_pass, g_lv, g_eps) =
          op.call(grads[0], s[0], s[1], s[2], {mu_in_pass, need[1], need[2]});
      if (mu_in_pass) g_mu = g_mu_pass;
    }
    return {reduce_to(g_mu, s[0], need[0]), reduce_to(g_lv, s[1], need[1]),
            reduce_to(g_eps, s[2], need[2])};
  }
};

// ------------------------------------------------------------------ affine coupling
struct Coupling : torch::autograd::Function<Coupling> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& s,
                               const Tensor& t, const Tensor& mask, bool reverse) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
    static auto op = handle<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&,
                                                       const Tensor&, const Tensor&, bool)>(
        "dgm_ext::affine_coupling");
    ctx->save_for_backward({x, s, t, mask});
    ctx->saved_data["reverse"] = reverse;
    ctx->set_materialize_grads(false);
    auto [y, logdet] = op.call(x, s, t, mask, reverse);
    return {y, logdet};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = handle<std::tuple<Tensor, Tensor, Tensor>(
        const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
        const Tensor&, bool, std::array<bool, 3>)>("dgm_ext::affine_coupling_backward");
    const auto v = ctx->get_saved_variables();
    const Tensor& x = v[0];
    // an output the loss does not use comes as undefined: zeros for it, only here
    Tensor gy = grads[0].defined() ? grads[0] : at::zeros_like(x);
    Tensor gl = grads[1].defined() ? grads[1] : at::zeros_symint({x.sym_size(0)}, x.options());
    const auto need = needs<3>(ctx);
    auto [gx, gs, gt] =
        op.call(gy, gl, x, v[1], v[2], v[3], ctx->saved_data["reverse"].toBool(), need);
    return {reduce_to(gx, x, need[0]), reduce_to(gs, v[1], need[1]),
            reduce_to(gt, v[2], need[2]), Tensor(), Tensor()};
  }
};

// ------------------------------------------------------------------ planar flows
// Both planar ops: (z, u, w, b) -> (z_K, logdet, activations); the activations are saved for
// the backward and not differentiable.
template <const char* kName>
variable_list planar_forward(AutogradContext* ctx, const Tensor& z, const Tensor& u,
                             const Tensor& w, const Tensor& b) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the backend kernel
  using Out = std::tuple<Tensor, Tensor, Tensor>;
  static auto op = handle<Out(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(kName);
  auto [z_out, logdet, act] = op.call(z, u, w, b);
  ctx->save_for_backward({z_out, act, u, w, b});
  ctx->mark_non_differentiable({act});
  ctx->set_materialize_grads(false);
  return {z_out, logdet, act};
}

constexpr char kPlanar[] = "dgm_ext::planar_flow";
constexpr char kPlanarRows[] = "dgm_ext::planar_flow_rows";

struct Planar : torch::autograd::Function<Planar> {
  static variable_list forward(AutogradContext* ctx, const Tensor& z, const Tensor& u,
                               const Tensor& w, const Tensor& b) {
    return planar_forward<kPlanar>(ctx, z, u, w, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Out = std::tuple<Tensor, Tensor, Tensor, Tensor>;
    static auto op = handle<Out(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, const Tensor&, const Tensor&)>(
        "dgm_ext::planar_flow_backward");
    const auto v = ctx->get_saved_variables();
    const Tensor& z_out = v[0];
    Tensor gz = grads[0].defined() ? grads[0] : at::zeros_like(z_out);
    Tensor gl = grads[1].defined() ? grads[1]
                                   : at::zeros_symint({z_out.sym_size(0)}, z_out.options());
    auto [a, b, c, d] = op.call(gz, gl, z_out, v[1], v[2], v[3], v[4]);
    return {a, b, c, d};
  }
};

struct PlanarRows : torch::autograd::Function<PlanarRows> {
  static variable_list forward(AutogradContext* ctx, const Tensor& z, const Tensor& u,
                               const Tensor& w, const Tensor& b) {
    return planar_forward<kPlanarRows>(ctx, z, u, w, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Out = std::tuple<Tensor, Tensor, Tensor, Tensor>;
    static auto op = handle<Out(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, const Tensor&, const Tensor&,
                                std::array<bool, 4>)>("dgm_ext::planar_flow_rows_backward");
    const auto v = ctx->get_saved_variables();
    const Tensor& z_out = v[0];
    Tensor gz = grads[0].defined() ? grads[0] : at::zeros_like(z_out);
    Tensor gl = grads[1].defined()
                    ? grads[1]
                    : at::zeros_symint(z_out.sym_sizes().slice(0, z_out.dim() - 1),
                                       z_out.options());
    const auto need = needs<4>(ctx);
    auto [a, b, c, d] = op.call(gz, gl, z_out, v[1], v[2], v[3], v[4], need);
    // the parameter gradients come back summed over the sample dims, in their own shapes
    return {need[0] ? a : Tensor(), need[1] ? b : Tensor(), need[2] ? c : Tensor(),
            need[3] ? d : Tensor()};
  }
};

std::tuple<Tensor, Tensor> tuple2(const variable_list& v) { return {v[0], v[1]}; }
std::tuple<Tensor, Tensor, Tensor> tuple3(const variable_list& v) { return {v[0], v[1], v[2]}; }

}  // namespace

TORCH_LIBRARY_IMPL(dgm_ext, Autograd, m) {
  m.impl("bernoulli_log_prob", &bernoulli_log_prob);
  m.impl("kl_normal_std", &kl_normal_std);
  m.impl("gaussian_log_prob", [](const Tensor& x, const Tensor& mean, const Tensor& logvar) {
    return Gaussian::apply(x, mean, logvar);
  });
  m.impl("beta_log_prob", [](const Tensor& x, const Tensor& a, const Tensor& b, double eps) {
    return Beta::apply(x, a, b, eps);
  });
  m.impl("categorical_log_prob", [](const Tensor& logits, const Tensor& x) {
    return tuple2(Categorical::apply(logits, x));
  });
  m.impl("kl_normal", [](const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& d) {
    return KlNormal::apply(a, b, c, d);
  });
  m.impl("reparameterize", [](const Tensor& mu, const Tensor& logvar, const Tensor& eps) {
    return Reparameterize::apply(mu, logvar, eps);
  });
  m.impl("affine_coupling", [](const Tensor& x, const Tensor& s, const Tensor& t,
                               const Tensor& mask, bool reverse) {
    return tuple2(Coupling::apply(x, s, t, mask, reverse));
  });
  m.impl("planar_flow", [](const Tensor& z, const Tensor& u, const Tensor& w, const Tensor& b) {
    return tuple3(Planar::apply(z, u, w, b));
  });
  m.impl("planar_flow_rows",
         [](const Tensor& z, const Tensor& u, const Tensor& w, const Tensor& b) {
           return tuple3(PlanarRows::apply(z, u, w, b));
         });
}

}  // namespace dgm_ext
