// All dgm_ext operator schemas, in one place, plus the Python module dgm_ext._C, which
// reports build information. Kernels are registered per backend in cpu/bindings_cpu.cpp and
// cuda/bindings_cuda.cpp, autograd in common/autograd.cpp; fake kernels are registered from
// Python (dgm_ext/ops/_registration.py).
#include <ATen/Parallel.h>
#include <Python.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>
#include <torch/version.h>

#include "cpu/kernels.h"

// `needs` masks say which input gradients to compute; unrequested ones come back empty.
TORCH_LIBRARY(dgm_ext, m) {
  m.def("bernoulli_log_prob(Tensor logits, Tensor x) -> Tensor");
  m.def(
      "bernoulli_log_prob_backward(Tensor grad, Tensor logits, Tensor x, bool[2] needs)"
      " -> (Tensor, Tensor)");
  m.def("gaussian_log_prob(Tensor x, Tensor mean, Tensor logvar) -> Tensor");
  m.def(
      "gaussian_log_prob_backward(Tensor grad, Tensor x, Tensor mean, Tensor logvar,"
      " bool[3] needs) -> (Tensor, Tensor, Tensor)");
  m.def("beta_log_prob(Tensor x, Tensor alpha, Tensor beta, float eps) -> Tensor");
  m.def(
      "beta_log_prob_backward(Tensor grad, Tensor x, Tensor alpha, Tensor beta, float eps,"
      " bool[3] needs) -> (Tensor, Tensor, Tensor)");
  // Returns (log_prob, logsumexp over classes); the second is saved for the backward.
  m.def("categorical_log_prob(Tensor logits, Tensor x) -> (Tensor, Tensor)");
  m.def(
      "categorical_log_prob_backward(Tensor grad, Tensor logits, Tensor x, Tensor lse)"
      " -> Tensor");
  m.def("kl_normal_std(Tensor mu, Tensor logvar) -> Tensor");
  m.def(
      "kl_normal_std_backward(Tensor grad, Tensor mu, Tensor logvar, bool[2] needs)"
      " -> (Tensor, Tensor)");
  m.def("kl_normal(Tensor mu_q, Tensor logvar_q, Tensor mu_p, Tensor logvar_p) -> Tensor");
  m.def(
      "kl_normal_backward(Tensor grad, Tensor mu_q, Tensor logvar_q, Tensor mu_p,"
      " Tensor logvar_p, bool[4] needs) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor eps) -> Tensor");
  m.def(
      "reparameterize_backward(Tensor grad, Tensor mu, Tensor logvar, Tensor eps,"
      " bool[3] needs) -> (Tensor, Tensor, Tensor)");
  m.def(
      "affine_coupling(Tensor x, Tensor s, Tensor t, Tensor mask, bool reverse)"
      " -> (Tensor, Tensor)");
  m.def(
      "affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor s,"
      " Tensor t, Tensor mask, bool reverse, bool[3] needs) -> (Tensor, Tensor, Tensor)");
  // Returns (z_K, logdet, activations h (N, K)); the last is saved for the backward.
  m.def("planar_flow(Tensor z, Tensor u, Tensor w, Tensor b) -> (Tensor, Tensor, Tensor)");
  m.def(
      "planar_flow_backward(Tensor grad_z, Tensor grad_logdet, Tensor z_out, Tensor act,"
      " Tensor u, Tensor w, Tensor b) -> (Tensor, Tensor, Tensor, Tensor)");
  // Per-row parameters: z (*S, N, d), u and w (N, K, d), b (N, K), shared over *S. Returns
  // (z_K, logdet (*S, N), activations h (*S, N, K)); the backward sums the parameter
  // gradients over *S.
  m.def(
      "planar_flow_rows(Tensor z, Tensor u, Tensor w, Tensor b) -> (Tensor, Tensor, Tensor)");
  m.def(
      "planar_flow_rows_backward(Tensor grad_z, Tensor grad_logdet, Tensor z_out, Tensor act,"
      " Tensor u, Tensor w, Tensor b, bool[4] needs) -> (Tensor, Tensor, Tensor, Tensor)");
}

namespace py = pybind11;

// Read from the file's bytes by dgm_ext/_extension.py when the module fails to load, so the
// error can name the torch this file was built against.
extern "C" __attribute__((used, visibility("default"))) const char dgm_ext_build_stamp[] =
    "dgm_ext-build-stamp: torch=" TORCH_VERSION ";";

#ifndef DGM_EXT_CUDA_ARCHS
#define DGM_EXT_CUDA_ARCHS ""
#endif

static py::dict build_info() {
  py::dict info;
  info["torch_version"] = TORCH_VERSION;
#ifdef DGM_EXT_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = DGM_EXT_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_archs"] = "";
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["cpu_isa_compiled"] =
#ifdef DGM_EXT_HAVE_AVX2
      "DEFAULT,AVX2";
#else
      "DEFAULT";
#endif
  info["cpu_isa"] = dgm_ext::cpu::kernels().isa;
  info["num_threads"] = at::get_num_threads();
  // The C++ standard the extension was compiled with (CMakeLists.txt: DGM_EXT_CXX_STANDARD).
  info["cxx_standard"] = __cplusplus >= 202302L ? "c++23" : __cplusplus >= 202002L ? "c++20" : "c++17";
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "dgm_ext compiled extension: registers the dgm_ext:: operators with the dispatcher.";
  m.def("build_info", &build_info,
        "Build information: torch version built against, CUDA on/off and architectures, "
        "OpenMP, compiled and selected CPU instruction sets, C++ standard.");
}
