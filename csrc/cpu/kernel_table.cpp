// Builds the kernel table of the ISA this file is compiled for (see kernels.h).
#include "kernels.h"

namespace dgm_ext::cpu {
inline namespace CPU_CAPABILITY {

#define DGM_STR2(x) #x
#define DGM_STR(x) DGM_STR2(x)

const KernelTable& kernel_table() {
  static const KernelTable table = [] {
    KernelTable t{};
    t.isa = DGM_STR(CPU_CAPABILITY);
#define DGM_FILL(name, P)                                                    \
  t.f32.name = static_cast<void (*)(const P<float>&)>(&CPU_CAPABILITY::name); \
  t.f64.name = static_cast<void (*)(const P<double>&)>(&CPU_CAPABILITY::name);
    DGM_CPU_KERNELS(DGM_FILL)
#undef DGM_FILL
    return t;
  }();
  return table;
}

}  // namespace CPU_CAPABILITY
}  // namespace dgm_ext::cpu
