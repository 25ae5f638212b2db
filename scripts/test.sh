#!/usr/bin/env bash
# The test command: installs what it needs (local venv with PyTorch for libtorch, CMake for HDF5;
# the default datasets from PyPI wheels; evcxr + nbconvert for the notebooks), then runs every test:
# cargo's (parity, errors, snapshot guard over the default `reproduce`), then the notebooks.
# Idempotent. Arguments go to `cargo test`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
# the snapshot guard runs the default reproduce into this stage cache; notebook 05 reuses it
export CELLSENTENCE_TEST_CACHE="${CELLSENTENCE_TEST_CACHE:-$ROOT/.cache/stages}"
cargo test --release --locked "$@"
scripts/test-notebooks.sh
