// CUDA registrations: the device-independent frontends (common/frontend.h) with the CUDA
// launchers of cuda/kernels_cuda.h.
//
// The frontends fill parameter blocks over torch's storage types (at::Half, at::BFloat16);
// the kernels are compiled over CUDA's (__half, __nv_bfloat16), which have the same size,
// alignment and bit layout. to_device_params() re-types a block as a bit copy (the blocks are
// trivially copyable and differ only in the pointee type of their pointers).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>

#include "common/frontend.h"
#include "kernels_cuda.h"

namespace dgm_ext::cuda {

template <typename T>
struct DeviceStorage {
  using type = T;
};
template <>
struct DeviceStorage<at::Half> {
  using type = __half;
};
template <>
struct DeviceStorage<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <template <class> class P, typename T>
P<typename DeviceStorage<T>::type> to_device_params(const P<T>& p) {
  using D = typename DeviceStorage<T>::type;
  if constexpr (std::is_same_v<T, D>) {
    return p;
  } else {
    static_assert(sizeof(T) == sizeof(D) && alignof(T) == alignof(D),
                  "torch and CUDA half types must share their layout");
    static_assert(sizeof(P<T>) == sizeof(P<D>) && alignof(P<T>) == alignof(P<D>));
    static_assert(std::is_trivially_copyable_v<P<T>> && std::is_trivially_copyable_v<P<D>>);
    P<D> out;
    std::memcpy(static_cast<void*>(&out), static_cast<const void*>(&p), sizeof(out));
    return out;
  }
}

struct CudaBackend {
  static constexpr bool kAllowHalf = true;

  template <class F>
  static void dispatch(at::ScalarType st, const char* op, F f) {
    switch (st) {
      case at::kFloat:
        f(static_cast<float*>(nullptr));
        break;
      case at::kDouble:
        f(static_cast<double*>(nullptr));
        break;
      case at::kHalf:
        f(static_cast<at::Half*>(nullptr));
        break;
      case at::kBFloat16:
        f(static_cast<at::BFloat16*>(nullptr));
        break;
      default:
        DGM_CHECK_TYPE(false, "dgm_ext.", op, ": unsupported dtype ", st, " on CUDA");
    }
  }

  // Kept alive by the frontend until the kernels are enqueued (see frontend::launch_guard).
  static c10::cuda::CUDAGuard before_launch(const at::Tensor& like) {
    DGM_CHECK_VALUE(like.is_cuda(), "dgm_ext: expected a CUDA tensor, got one on ",
                    like.device());
    return c10::cuda::CUDAGuard(like.device());
  }

#define DGM_CUDA_LAUNCH(name, P)                                          \
  template <class T>                                                      \
  static void name(const P<T>& p) {                                       \
    cuda::name(to_device_params(p), c10::cuda::getCurrentCUDAStream());    \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                       \
  }
  DGM_CUDA_KERNELS(DGM_CUDA_LAUNCH)
#undef DGM_CUDA_LAUNCH

  // Planar flow: a scratch buffer from the caching allocator on the current device/stream.
  static void check_planar_dim(int64_t d, const char* op) {
    DGM_CHECK_VALUE(d <= kPlanarMaxDim, "dgm_ext.", op, ": on CUDA the dimension d of 'z' must",
                    " be at most ", kPlanarMaxDim, ", got ", d);
  }
  static at::Tensor workspace(size_t bytes) {
    return at::empty({static_cast<int64_t>(bytes)},
                     at::TensorOptions().dtype(at::kByte).device(
                         at::Device(at::kCUDA, c10::cuda::current_device())));
  }

  template <class T>
  static void planar_fwd(const PlanarParams<T>& p) {
    check_planar_dim(p.d, "planar_flow");
    const auto dp = to_device_params(p);
    at::Tensor ws = workspace(cuda::planar_fwd_workspace(dp));
    cuda::planar_fwd(dp, ws.data_ptr(), c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <class T>
  static void planar_bwd(const PlanarParams<T>& p) {
    check_planar_dim(p.d, "planar_flow_backward");
    const auto dp = to_device_params(p);
    at::Tensor ws = workspace(cuda::planar_bwd_workspace(dp));
    cuda::planar_bwd(dp, ws.data_ptr(), c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <class T>
  static void planar_rows_fwd(const PlanarRowsParams<T>& p) {
    check_planar_dim(p.d, "planar_flow_rows");
    const auto dp = to_device_params(p);
    at::Tensor ws = workspace(cuda::planar_rows_fwd_workspace(dp));
    cuda::planar_rows_fwd(dp, ws.data_ptr(), c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <class T>
  static void planar_rows_bwd(const PlanarRowsParams<T>& p) {
    check_planar_dim(p.d, "planar_flow_rows_backward");
    const auto dp = to_device_params(p);
    at::Tensor ws = workspace(cuda::planar_rows_bwd_workspace(dp));
    cuda::planar_rows_bwd(dp, ws.data_ptr(), c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

TORCH_LIBRARY_IMPL(dgm_ext, CUDA, m) {
  dgm_ext::frontend::register_ops<CudaBackend>(m);
}

}  // namespace dgm_ext::cuda
