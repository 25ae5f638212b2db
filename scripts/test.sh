#!/usr/bin/env bash
# The test command: installs what it needs (local venv with PyTorch for libtorch, CMake for HDF5;
# the default datasets from PyPI wheels), then runs every test. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
cargo test --release --locked "$@"
