// Plain parameter structs handed from the torch-facing bindings to the kernels.
// Torch-free: used by the CPU loops and by the CUDA kernels alike.
#pragma once
#include <cstdint>

#include "dgm_ext/macros.h"

namespace dgm_ext {

constexpr int kMaxRowDims = 6;  // batch dimensions left after coalescing
constexpr int kMaxInputs = 6;   // tensors addressed through one RowLayout

// Maps a row index (row-major over the broadcast batch shape) to the element offset of
// that row's first column in each input. Broadcast dimensions have stride 0.
struct RowIndexer {
  int ndim = 0;
  int n_inputs = 0;
  int64_t sizes[kMaxRowDims] = {};
  int64_t strides[kMaxInputs][kMaxRowDims] = {};

  DGM_HD void offsets(int64_t row, int64_t* off) const {
    for (int i = 0; i < n_inputs; ++i) off[i] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t idx = row % sizes[d];
      row /= sizes[d];
      for (int i = 0; i < n_inputs; ++i) off[i] += idx * strides[i][d];
    }
  }
};

// Walks consecutive rows without a division per row (CPU loops over contiguous row ranges).
struct RowCursor {
  const RowIndexer& index;
  int64_t idx[kMaxRowDims] = {};
  int64_t off[kMaxInputs] = {};

  DGM_HD RowCursor(const RowIndexer& ix, int64_t row) : index(ix) {
    index.offsets(row, off);
    for (int d = index.ndim - 1; d >= 0; --d) {
      idx[d] = row % index.sizes[d];
      row /= index.sizes[d];
    }
  }

  DGM_HD void next() {
    for (int d = index.ndim - 1; d >= 0; --d) {
      for (int i = 0; i < index.n_inputs; ++i) off[i] += index.strides[i][d];
      if (++idx[d] < index.sizes[d]) return;
      for (int i = 0; i < index.n_inputs; ++i) off[i] -= index.strides[i][d] * index.sizes[d];
      idx[d] = 0;
    }
  }
};

// A batch of `rows` rows of `cols` elements each, read from up to kMaxInputs strided inputs.
// col_stride[i] is the element stride along the columns of input i: 0 (broadcast along the
// row) or 1 (contiguous) for every op except categorical_log_prob, whose columns are
// categorical variables K elements apart.
struct RowLayout {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t col_stride[kMaxInputs] = {};
  RowIndexer index;
};

// Per-op parameter blocks. `T` is the storage type. Gradient pointers are null when that
// gradient is not requested; the matching kernels then skip the store.
template <typename T>
struct BernoulliParams {
  RowLayout layout;  // inputs: logits, x
  const T* logits = nullptr;
  const T* x = nullptr;
  T* out = nullptr;  // (rows)
  const T* grad = nullptr;  // (rows), backward only
  T* grad_logits = nullptr;  // (rows, cols) contiguous
  T* grad_x = nullptr;
};

template <typename T>
struct GaussianParams {
  RowLayout layout;  // inputs: x, mean, logvar
  const T* x = nullptr;
  const T* mean = nullptr;
  const T* logvar = nullptr;
  T* out = nullptr;
  const T* grad = nullptr;
  T* grad_x = nullptr;
  T* grad_mean = nullptr;
  T* grad_logvar = nullptr;
};

template <typename T>
struct BetaParams {
  RowLayout layout;  // inputs: x, alpha, beta
  const T* x = nullptr;
  const T* alpha = nullptr;
  const T* beta = nullptr;
  double eps = 1e-6;
  T* out = nullptr;
  const T* grad = nullptr;
  T* grad_x = nullptr;
  T* grad_alpha = nullptr;
  T* grad_beta = nullptr;
};

template <typename T>
struct CategoricalParams {
  RowLayout layout;  // inputs: logits (column stride = K, classes contiguous), x
  int64_t num_classes = 0;
  const T* logits = nullptr;
  const int64_t* x = nullptr;
  T* out = nullptr;  // (rows)
  T* lse = nullptr;  // (rows, cols) log-sum-exp saved for the backward
  const T* grad = nullptr;
  const T* lse_in = nullptr;
  T* grad_logits = nullptr;  // (rows, cols, K) contiguous
};

template <typename T>
struct KlStdParams {
  RowLayout layout;  // inputs: mu, logvar
  const T* mu = nullptr;
  const T* logvar = nullptr;
  T* out = nullptr;
  const T* grad = nullptr;
  T* grad_mu = nullptr;
  T* grad_logvar = nullptr;
};

template <typename T>
struct KlNormalParams {
  RowLayout layout;  // inputs: mu_q, logvar_q, mu_p, logvar_p
  const T* mu_q = nullptr;
  const T* logvar_q = nullptr;
  const T* mu_p = nullptr;
  const T* logvar_p = nullptr;
  T* out = nullptr;
  const T* grad = nullptr;
  T* grad_mu_q = nullptr;
  T* grad_logvar_q = nullptr;
  T* grad_mu_p = nullptr;
  T* grad_logvar_p = nullptr;
};

template <typename T>
struct ReparamParams {
  RowLayout layout;  // inputs: mu, logvar, eps (+ grad in the backward)
  const T* mu = nullptr;
  const T* logvar = nullptr;
  const T* eps = nullptr;
  T* z = nullptr;  // (rows, cols) contiguous
  const T* grad = nullptr;  // strided like the inputs (4th layout input)
  T* grad_mu = nullptr;
  T* grad_logvar = nullptr;
  T* grad_eps = nullptr;
};

template <typename T>
struct CouplingParams {
  RowLayout layout;  // inputs: x, s, t, mask (+ grad_y in the backward)
  bool reverse = false;
  const T* x = nullptr;
  const T* s = nullptr;
  const T* t = nullptr;
  const T* mask = nullptr;
  T* y = nullptr;       // (rows, cols) contiguous
  T* logdet = nullptr;  // (rows)
  const T* grad_y = nullptr;       // 5th layout input
  const T* grad_logdet = nullptr;  // (rows)
  T* grad_x = nullptr;
  T* grad_s = nullptr;
  T* grad_t = nullptr;
};

template <typename T>
struct PlanarParams {
  int64_t n = 0;  // rows of z
  int64_t d = 0;  // dimension
  int64_t k = 0;  // layers
  const T* z = nullptr;  // (n, d) contiguous
  const T* u = nullptr;  // (k, d)
  const T* w = nullptr;  // (k, d)
  const T* b = nullptr;  // (k)
  T* z_out = nullptr;    // (n, d)
  T* logdet = nullptr;   // (n)
  T* act = nullptr;      // (n, k) activations h_k = tanh(w_k . z_{k-1} + b_k), for the backward
  // backward
  const T* grad_z = nullptr;       // (n, d)
  const T* grad_logdet = nullptr;  // (n)
  const T* z_final = nullptr;      // (n, d) forward output
  const T* act_in = nullptr;       // (n, k)
  T* grad_z_in = nullptr;          // (n, d)
  T* grad_u = nullptr;             // (k, d)
  T* grad_w = nullptr;             // (k, d)
  T* grad_b = nullptr;             // (k)
};

// Planar flow with per-row layer parameters: z is (S, N, d) (S = the product of the leading
// sample dims), row r = s * N + i uses layer parameters i, so the parameters broadcast over
// the samples without being copied. All arrays contiguous.
template <typename T>
struct PlanarRowsParams {
  int64_t samples = 0;  // S
  int64_t n = 0;        // N: parameter rows
  int64_t d = 0;        // dimension
  int64_t k = 0;        // layers
  const T* z = nullptr;  // (S, N, d)
  const T* u = nullptr;  // (N, K, d)
  const T* w = nullptr;  // (N, K, d)
  const T* b = nullptr;  // (N, K)
  T* z_out = nullptr;    // (S, N, d)
  T* logdet = nullptr;   // (S, N)
  T* act = nullptr;      // (S, N, K) activations h_k, for the backward
  // backward; a null gradient pointer is not requested and not stored
  const T* grad_z = nullptr;       // (S, N, d)
  const T* grad_logdet = nullptr;  // (S, N)
  const T* z_final = nullptr;      // (S, N, d) forward output
  const T* act_in = nullptr;       // (S, N, K)
  T* grad_z_in = nullptr;          // (S, N, d)
  T* grad_u = nullptr;             // (N, K, d), summed over the samples
  T* grad_w = nullptr;             // (N, K, d)
  T* grad_b = nullptr;             // (N, K)
};

}  // namespace dgm_ext
