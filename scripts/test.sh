#!/usr/bin/env bash
# The test command: installs what it needs (local venv with PyTorch for libtorch, CMake for HDF5;
# the default datasets from PyPI wheels), then runs every cargo test: parity, errors, and the
# snapshot guard over the default `reproduce`, and every notebook's cells in order (tests/notebooks.rs).
# Idempotent. Arguments go to `cargo test`.
# With NOTEBOOK_KERNEL=1 it then also executes the notebooks in the evcxr kernel itself
# (scripts/test-notebooks.sh: headless nbconvert; the kernel's own cold build adds ~25–40 min on
# 2 cores, which is why CI leaves it out).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
# the sharded workflow's test runs workflow/Snakefile with Snakemake (PyPI) from the project venv
python -c "import snakemake" 2>/dev/null || python -m pip install -q "snakemake==9.27.1"
# the snapshot guard runs the default reproduce into this stage cache (warm after scripts/reproduce.sh)
export CELLSENTENCE_TEST_CACHE="${CELLSENTENCE_TEST_CACHE:-$ROOT/.cache/stages}"
cargo test --release --locked "$@"
if [ "${NOTEBOOK_KERNEL:-0}" = "1" ]; then
  scripts/test-notebooks.sh
fi
