#include "prepare.h"

#include <ATen/ExpandUtils.h>

namespace dgm_ext {

void check_floating(const NamedTensor& t, const char* op, bool allow_half) {
  DGM_CHECK_VALUE(t.tensor.defined(), "dgm_ext.", op, ": argument '", t.name,
                  "' is an undefined tensor");
  const auto st = t.tensor.scalar_type();
  const bool ok = st == at::kFloat || st == at::kDouble ||
                  (allow_half && (st == at::kHalf || st == at::kBFloat16));
  DGM_CHECK_TYPE(ok, "dgm_ext.", op, ": argument '", t.name, "' must be a ",
                 allow_half ? "float16/bfloat16/float32/float64" : "float32/float64",
                 " tensor, got ", st);
}

void check_device(const NamedTensor& t, const NamedTensor& ref, const char* op) {
  DGM_CHECK_VALUE(t.tensor.device() == ref.tensor.device(), "dgm_ext.", op, ": argument '",
                  t.name, "' is on ", t.tensor.device(), " but '", ref.name, "' is on ",
                  ref.tensor.device(), "; all tensor arguments must be on the same device");
}

void check_like(const NamedTensor& t, const NamedTensor& ref, const char* op) {
  DGM_CHECK_VALUE(t.tensor.defined(), "dgm_ext.", op, ": argument '", t.name,
                  "' is an undefined tensor");
  check_device(t, ref, op);
  DGM_CHECK_TYPE(t.tensor.scalar_type() == ref.tensor.scalar_type(), "dgm_ext.", op,
                 ": argument '", t.name, "' must have the same dtype as '", ref.name, "' (",
                 ref.tensor.scalar_type(), "), got ", t.tensor.scalar_type());
}

void fill_row_index(RowLayout& layout, std::vector<at::Tensor>& expanded, int64_t col_dims) {
  const int64_t n = static_cast<int64_t>(expanded.size());
  TORCH_INTERNAL_ASSERT(n <= kMaxInputs);
  const auto full = expanded[0].sizes();
  const int64_t nb = static_cast<int64_t>(full.size()) - col_dims;
  // Coalesce batch dims (outermost first), dropping size-1 dims.
  std::vector<int64_t> sizes;
  std::vector<std::vector<int64_t>> strides(n);
  for (int64_t d = 0; d < nb; ++d) {
    if (full[d] == 1) continue;
    bool merge = !sizes.empty();
    for (int64_t i = 0; merge && i < n; ++i) {
      merge = strides[i].back() == expanded[i].stride(d) * full[d];
    }
    if (merge) {
      sizes.back() *= full[d];
      for (int64_t i = 0; i < n; ++i) strides[i].back() = expanded[i].stride(d);
    } else {
      sizes.push_back(full[d]);
      for (int64_t i = 0; i < n; ++i) strides[i].push_back(expanded[i].stride(d));
    }
  }
  if (static_cast<int64_t>(sizes.size()) > kMaxRowDims) {
    // Too many independent batch dims: materialise every input as (rows, cols...).
    for (auto& e : expanded) e = e.contiguous();
    fill_row_index(layout, expanded, col_dims);
    return;
  }
  layout.index = RowIndexer{};
  layout.index.ndim = static_cast<int>(sizes.size());
  layout.index.n_inputs = static_cast<int>(n);
  for (size_t d = 0; d < sizes.size(); ++d) {
    layout.index.sizes[d] = sizes[d];
    for (int64_t i = 0; i < n; ++i) layout.index.strides[i][d] = strides[i][d];
  }
}

std::vector<int64_t> broadcast_named(const char* op, const std::vector<NamedTensor>& inputs) {
  // Broadcast shape with a message naming the arguments on failure.
  std::vector<int64_t> full(inputs[0].tensor.sizes().begin(), inputs[0].tensor.sizes().end());
  for (size_t i = 1; i < inputs.size(); ++i) {
    const auto s = inputs[i].tensor.sizes();
    const int64_t nd = std::max<int64_t>(full.size(), s.size());
    std::vector<int64_t> out(nd);
    for (int64_t d = 0; d < nd; ++d) {
      const int64_t a = d - nd + static_cast<int64_t>(full.size());
      const int64_t b = d - nd + static_cast<int64_t>(s.size());
      const int64_t sa = a >= 0 ? full[a] : 1;
      const int64_t sb = b >= 0 ? s[b] : 1;
      DGM_CHECK_VALUE(sa == sb || sa == 1 || sb == 1, "dgm_ext.", op, ": argument '",
                      inputs[i].name, "' with shape ", s,
                      " does not broadcast with '", inputs[0].name, "' (shape ",
                      inputs[0].tensor.sizes(), ") and the other arguments");
      out[d] = sa == 1 ? sb : sa;
    }
    full = std::move(out);
  }
  return full;
}

at::Tensor left_pad(const at::Tensor& t, int64_t nd) {
  // Every call below saves a dispatcher round trip (~2 us each at training sizes, where a
  // whole op costs tens of us): no view when nothing is padded or expanded.
  if (t.dim() == nd) return t;
  std::vector<int64_t> padded(nd - t.dim(), 1);
  padded.insert(padded.end(), t.sizes().begin(), t.sizes().end());
  return t.reshape(padded);  // a view: only prepends size-1 dims
}

RowPrep prepare_rows(const char* op, const std::vector<NamedTensor>& inputs, int64_t col_dims) {
  RowPrep prep;
  const std::vector<int64_t> full = broadcast_named(op, inputs);
  const int64_t nd = static_cast<int64_t>(full.size());
  DGM_CHECK_VALUE(nd >= col_dims, "dgm_ext.", op, ": arguments must have at least ", col_dims,
                  " dimension(s), got shape ", full);
  const int64_t nb = nd - col_dims;
  int64_t cols = 1;
  for (int64_t d = nb; d < nd; ++d) cols *= full[d];

  std::vector<at::Tensor> expanded;
  for (size_t i = 0; i < inputs.size(); ++i) {
    at::Tensor t = left_pad(inputs[i].tensor, nd);
    // Columns: all broadcast, or flattenable with unit stride; otherwise copy this input's
    // own rows with full columns (small: broadcast batch dims stay size 1). A stride-0 dim
    // counts as broadcast: an expanded gradient (that of out.sum() or out.mean()) is then
    // read in place instead of being materialised at the full size.
    bool all_bcast = true, unit = true;
    int64_t expect = 1;
    for (int64_t d = nd - 1; d >= nb; --d) {
      const bool bc = (t.size(d) == 1 || t.stride(d) == 0) && full[d] != 1;
      all_bcast = all_bcast && (bc || full[d] == 1);
      if (full[d] != 1) {
        unit = unit && !bc && t.stride(d) == expect;
        expect *= full[d];
      }
    }
    int64_t col_stride = 1;
    if (all_bcast) {
      col_stride = 0;
    } else if (!unit) {
      std::vector<int64_t> target(t.sizes().begin(), t.sizes().end());
      for (int64_t d = nb; d < nd; ++d) target[d] = full[d];
      t = t.expand(target).contiguous();
    }
    prep.layout.col_stride[i] = cols <= 1 ? 1 : col_stride;
    prep.inputs.push_back(t);
    expanded.push_back(t.sizes().equals(full) ? t : t.expand(full));
  }
  prep.layout.cols = cols;
  int64_t rows = 1;
  for (int64_t d = 0; d < nb; ++d) rows *= full[d];
  prep.layout.rows = rows;
  prep.batch_shape.assign(full.begin(), full.begin() + nb);
  prep.full_shape = full;
  if (rows > 0 && cols > 0) {
    fill_row_index(prep.layout, expanded, col_dims);
    // The row offsets index the (possibly materialised) expanded views; point at them.
    for (size_t i = 0; i < inputs.size(); ++i) prep.inputs[i] = expanded[i];
  }
  return prep;
}

}  // namespace dgm_ext
