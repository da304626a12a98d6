// Torch-facing helpers shared by the CPU and CUDA bindings: argument checks with messages that
// name the offending argument, and the broadcasting/stride analysis that fills a RowLayout.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "dgm_ext/params.h"
#include "errors.h"

namespace dgm_ext {

struct NamedTensor {
  const char* name;
  at::Tensor tensor;
};

// Floating dtype check: float32/float64, plus float16/bfloat16 when allow_half (CUDA).
void check_floating(const NamedTensor& t, const char* op, bool allow_half);
// Same dtype and device as the reference argument.
void check_like(const NamedTensor& t, const NamedTensor& ref, const char* op);
void check_device(const NamedTensor& t, const NamedTensor& ref, const char* op);

// Inputs broadcast to (batch..., cols...) where the last `col_dims` dimensions are the
// columns. Every input's columns are made contiguous (stride 1) or broadcast (stride 0),
// copying only that input's own (un-broadcast) elements when needed, never the full batch.
struct RowPrep {
  RowLayout layout;
  std::vector<at::Tensor> inputs;  // same order as given; keep the storage alive
  std::vector<int64_t> batch_shape;
  std::vector<int64_t> full_shape;
};
std::vector<int64_t> broadcast_named(const char* op, const std::vector<NamedTensor>& inputs);
// View of t with size-1 dims prepended up to nd dims.
at::Tensor left_pad(const at::Tensor& t, int64_t nd);
RowPrep prepare_rows(const char* op, const std::vector<NamedTensor>& inputs, int64_t col_dims);

// Fills the batch (row) part of a layout from tensors already expanded to the same shape
// whose last `col_dims` dims are columns; coalesces dimensions, materialising inputs if more
// than kMaxRowDims remain.
void fill_row_index(RowLayout& layout, std::vector<at::Tensor>& expanded, int64_t col_dims);

template <typename T>
const T* cptr(const at::Tensor& t) { return t.const_data_ptr<T>(); }
// Pointer to a gradient buffer, null when that gradient is not requested (empty tensor).
template <typename T>
T* opt_ptr(const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.mutable_data_ptr<T>() : nullptr; }

}  // namespace dgm_ext
