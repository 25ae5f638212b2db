# Sourced by the setup/test scripts: local venv with PyTorch (libtorch for tch) and CMake (static HDF5).
# Idempotent: creates .venv only when missing or incomplete.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
TORCH_VERSION="2.13.0"
if ! "$VENV/bin/python" -c "import torch, cmake; assert torch.__version__.split('+')[0] == '$TORCH_VERSION'" 2>/dev/null; then
  echo "[setup] creating $VENV with torch==$TORCH_VERSION and cmake (one-time, ~3 GB)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" "cmake>=3.26"
fi
export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# libtorch's CPU kernels pinned to AVX2 (as the binary and .cargo/config.toml do), for processes
# started outside cargo, e.g. the evcxr notebook kernel; a value already set is kept.
export ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-avx2}" MKL_CBWR="${MKL_CBWR:-AVX2,STRICT}" ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
