#!/usr/bin/env bash
# Builds cellsentence against another PyTorch/libtorch than the default 2.13, for a GPU machine whose
# PyTorch is older (e.g. 2.11, see ../shared/reference/gpu-notes.md). The default build, CI and
# `reproduce` stay on 2.13: this works on a copy of the working tree in .cache/libtorch-VERSION/src
# whose Cargo.toml pins the tch/torch-sys release made for VERSION.
#
#   scripts/build-for-libtorch.sh VERSION [--python PY] [--test]
#
#   VERSION      2.11 (tch 0.24), 2.12 (tch 0.25) or 2.13 (tch 0.26, the default build's).
#   --python PY  a Python whose `import torch` is VERSION. Without it a venv is made in
#                .cache/libtorch-VERSION/venv with torch==VERSION.0 from PyPI (its CUDA 13 build, ~530 MB);
#                its NVIDIA libraries are taken from .venv (same CUDA major) rather than downloaded.
#   --test       then run the CPU parity tests against transformers and PyTorch with this build.
#
# Output: .cache/libtorch-VERSION/cellsentence (stripped). On the GPU machine run it with
#   LD_LIBRARY_PATH=<that machine's site-packages>/torch/lib ./cellsentence env
# (the rpath baked in here points at this machine's venv). A cold build takes ~30 min on 2 cores; the
# compiled dependencies of target/release are copied in first, so only torch-sys, tch and the crate
# itself are rebuilt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n 6,13p "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
VERSION="$1"; shift
case "$VERSION" in
  2.11) TCH=0.24.0 ;;
  2.12) TCH=0.25.0 ;;
  2.13) TCH=0.26.0 ;;
  *) echo "error: VERSION '$VERSION' is not one this script knows (2.11, 2.12 or 2.13): tch pins one libtorch per release" >&2; exit 2 ;;
esac
PY="" TEST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) [ $# -ge 2 ] || usage; PY="$2"; shift 2 ;;
    --test) TEST=1; shift ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done

WORK="$ROOT/.cache/libtorch-$VERSION"
mkdir -p "$WORK"
if [ -z "$PY" ]; then
  VENV="$WORK/venv"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[libtorch $VERSION] making $VENV with torch==$VERSION.0 (no CUDA libraries downloaded)" >&2
    python3 -m venv "$VENV"
  fi
  # torch's CUDA libraries are found through site-packages/nvidia: .venv's (same CUDA major)
  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  MAIN_SITE="$(ls -d "$ROOT"/.venv/lib/python3*/site-packages | head -1)"
  [ -d "$MAIN_SITE/nvidia" ] || { echo "error: $MAIN_SITE/nvidia is missing: run 'source scripts/env.sh' once, or give --python" >&2; exit 1; }
  ln -sfn "$MAIN_SITE/nvidia" "$SITE/nvidia"
  if ! "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$VERSION.')" 2>/dev/null; then
    "$VENV/bin/pip" install -q --no-deps "torch==$VERSION.0"
    "$VENV/bin/pip" install -q typing_extensions sympy networkx jinja2 fsspec filelock numpy
  fi
  PY="$VENV/bin/python"
fi
GOT="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
case "$GOT" in
  "$VERSION".*) ;;
  *) echo "error: $PY has torch $GOT, not $VERSION: give --python a Python with PyTorch $VERSION" >&2; exit 1 ;;
esac

# A copy of the working tree (tracked and untracked, not ignored files) with tch pinned for VERSION.
SRC="$WORK/src"
rm -rf "$SRC"; mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$SRC"
[ -d "$ROOT/../shared" ] && ln -sfn "$ROOT/../shared" "$WORK/shared" # tests read ../shared beside the crate
sed -i -E "s/^tch = \"[^\"]+\"/tch = \"=$TCH\"/; s/^torch-sys = \"[^\"]+\"/torch-sys = \"=$TCH\"/" "$SRC/Cargo.toml"
grep -q "^tch = \"=$TCH\"" "$SRC/Cargo.toml" && grep -q "^torch-sys = \"=$TCH\"" "$SRC/Cargo.toml" || {
  echo "error: could not pin tch/torch-sys in $SRC/Cargo.toml (their lines changed?)" >&2; exit 1; }

TARGET="$WORK/target"
if [ ! -d "$TARGET/release/deps" ] && [ -d "$ROOT/target/release/deps" ]; then
  echo "[libtorch $VERSION] seeding $TARGET with the compiled dependencies of target/release" >&2
  mkdir -p "$TARGET/release"
  cp -a --reflink=auto "$ROOT/target/release/deps" "$ROOT/target/release/build" "$ROOT/target/release/.fingerprint" "$TARGET/release/"
fi

export PATH="$(dirname "$PY"):$ROOT/.venv/bin:$PATH" # python for torch-sys first; cmake (HDF5) from .venv
export LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR="$TARGET"
unset LIBTORCH LIBTORCH_LIB LIBTORCH_INCLUDE LIBTORCH_BYPASS_VERSION_CHECK
cd "$SRC"
echo "[libtorch $VERSION] cargo build --release (tch $TCH)" >&2
cargo build --release --bin cellsentence
cp "$TARGET/release/cellsentence" "$WORK/cellsentence"
strip "$WORK/cellsentence"
"$WORK/cellsentence" env
echo "[libtorch $VERSION] built $WORK/cellsentence ($(du -h "$WORK/cellsentence" | cut -f1), stripped)" >&2

if [ "$TEST" = 1 ]; then
  echo "[libtorch $VERSION] CPU parity tests against transformers and PyTorch" >&2
  cargo test --release --test lm -- forward_matches_transformers every_layer_and_pooling \
    embeddings_are_masked_means adamw_matches_libtorch small_lm_training_is_seeded
  cargo test --release --test annotation -- mlp_matches_pytorch_within_one_percent
fi
