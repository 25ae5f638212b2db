#!/usr/bin/env bash
# The test command: installs what it needs (local venv with PyTorch for libtorch, CMake for HDF5;
# the default datasets from PyPI wheels), then runs every cargo test: parity, errors, and the
# snapshot guard over the default `reproduce`. Idempotent. Arguments go to `cargo test`.
# The notebooks run headless with scripts/test-notebooks.sh (not yet part of this command: the
# evcxr kernel's cold build of the crate takes longer than CI allows).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
# the snapshot guard runs the default reproduce into this stage cache (warm after scripts/reproduce.sh)
export CELLSENTENCE_TEST_CACHE="${CELLSENTENCE_TEST_CACHE:-$ROOT/.cache/stages}"
cargo test --release --locked "$@"
