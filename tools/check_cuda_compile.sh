#!/usr/bin/env bash
# Torch-free compile check of the CUDA kernels: compiles every csrc/cuda/*.cu with nvcc for
# sm_80 and sm_90 with the project's C++ standard (no torch headers needed; bindings_cuda.cpp
# is not compiled here).
# Exit status: 0 when all compile (or when nvcc is absent: skipped), 1 on any failure.
set -u
cd "$(dirname "$0")/.."

NVCC="${NVCC:-}"
if [ -z "$NVCC" ]; then
  if command -v nvcc >/dev/null 2>&1; then
    NVCC="$(command -v nvcc)"
  elif [ -x /usr/local/cuda/bin/nvcc ]; then
    NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
if [ -z "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found; skipping the CUDA compile check"
  exit 0
fi

# The project's one C++ standard, from CMakeLists.txt (set(DGM_EXT_CXX_STANDARD NN)).
STD="$(sed -n 's/^set(DGM_EXT_CXX_STANDARD \([0-9][0-9]*\)).*/\1/p' CMakeLists.txt)"
if [ -z "$STD" ]; then
  echo "check_cuda_compile: no set(DGM_EXT_CXX_STANDARD NN) line in CMakeLists.txt"
  exit 1
fi

OUT="$(mktemp -d "${TMPDIR:-/tmp}/dgm_cuda_check.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT
echo "check_cuda_compile: $("$NVCC" --version | tail -n 1), -std=c++$STD"

status=0
shopt -s nullglob
# The kernels must stay torch-free (only bindings_cuda.cpp may include torch headers).
if grep -nE '#include[[:space:]]*[<"](torch|ATen|c10)/' csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.h \
    csrc/include/dgm_ext/*.h; then
  echo "check_cuda_compile: torch/ATen/c10 include in a torch-free CUDA file (above)"
  status=1
fi
files=(csrc/cuda/*.cu)
if [ ${#files[@]} -eq 0 ]; then
  echo "check_cuda_compile: no .cu files under csrc/cuda"
  exit 1
fi
for f in "${files[@]}"; do
  obj="$OUT/$(basename "$f" .cu).o"
  if "$NVCC" -std=c++"$STD" -O3 --expt-relaxed-constexpr -Werror all-warnings \
      -Icsrc/include -Icsrc \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -c "$f" -o "$obj"; then
    echo "  ok    $f"
  else
    echo "  FAIL  $f"
    status=1
  fi
done
exit $status
