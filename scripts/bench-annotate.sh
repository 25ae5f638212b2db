#!/usr/bin/env bash
# Annotation benchmarks: our MLP vs PyTorch (seconds per epoch, same features and folds) and our linear SVM
# vs scikit-learn LinearSVC (fit time, same rows); writes results/benchmarks/annotation.{md,csv}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
source scripts/lm-ref-env.sh
scripts/fetch-data.sh
cargo build --release --locked
target/release/cellsentence bench annotate --python "$LMREF/bin/python" "$@"
