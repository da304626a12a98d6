// Chooses the CPU kernel table for the running processor.
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace dgm_ext::cpu {
namespace DEFAULT {
const KernelTable& kernel_table();
}
#ifdef DGM_EXT_HAVE_AVX2
namespace AVX2 {
const KernelTable& kernel_table();
}
#endif

const KernelTable& kernels() {
  static const KernelTable& chosen = []() -> const KernelTable& {
    // DGM_EXT_CPU_ISA=default forces the portable kernels (used by the tests to check both).
    const char* forced = std::getenv("DGM_EXT_CPU_ISA");
    const bool force_default = forced != nullptr && std::strcmp(forced, "default") == 0;
#ifdef DGM_EXT_HAVE_AVX2
    if (!force_default && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      return AVX2::kernel_table();
    }
#endif
    (void)force_default;
    return DEFAULT::kernel_table();
  }();
  return chosen;
}

}  // namespace dgm_ext::cpu
