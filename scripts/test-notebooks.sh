#!/usr/bin/env bash
# Executes every notebook top to bottom, headless (`jupyter nbconvert --to notebook --execute`),
# with the evcxr Rust kernel; fails on the first cell error. Installs what it needs, idempotently:
# evcxr_jupyter into .tools/, nbconvert into the project venv, a kernel spec under .tools/jupyter.
# EVCXR_TMPDIR keeps the kernel's build of the crate between notebooks (and between runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
EVCXR_VERSION="0.22.0"
EVCXR="$ROOT/.tools/bin/evcxr_jupyter"
if ! [ -x "$EVCXR" ] || ! grep -qs "evcxr_jupyter $EVCXR_VERSION" "$ROOT/.tools/.crates.toml"; then
  echo "[notebooks] installing evcxr_jupyter $EVCXR_VERSION into .tools (one-time, 10–20 min on 2 cores)" >&2
  # evcxr only drives cargo: a quick-to-build profile is enough
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_LTO=false \
    cargo install --quiet evcxr_jupyter --version "$EVCXR_VERSION" --locked --root "$ROOT/.tools"
fi
if ! python -c "import nbconvert, nbclient" 2>/dev/null; then
  pip install -q -r notebooks/requirements.txt
fi
[ "${1:-}" != "--install-only" ] || exit 0
export JUPYTER_PATH="$ROOT/.tools/jupyter"
mkdir -p "$JUPYTER_PATH/kernels/rust"
cat > "$JUPYTER_PATH/kernels/rust/kernel.json" <<JSON
{"argv": ["$EVCXR", "--control_file", "{connection_file}"], "display_name": "Rust", "language": "rust", "interrupt_mode": "message"}
JSON
export EVCXR_TMPDIR="$ROOT/target/evcxr"
mkdir -p "$EVCXR_TMPDIR"
# the kernel's cdylibs link libtorch from the venv's torch wheel
TORCH_LIB="$(python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT="$ROOT/target/notebooks"
mkdir -p "$OUT"
notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/*.ipynb)
for nb in "${notebooks[@]}"; do
  start=$(date +%s)
  echo "[notebooks] executing $nb" >&2
  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=rust \
    --ExecutePreprocessor.timeout=7200 --ExecutePreprocessor.startup_timeout=120 \
    --output-dir "$OUT" "$nb" >&2
  echo "[notebooks] $nb: ok ($(( $(date +%s) - start )) s)" >&2
done
