#!/usr/bin/env bash
# Benchmarks against scanpy + cell2sentence (reference venv .venv-ref), written to results/benchmarks/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
REF="$ROOT/.venv-ref"
if ! "$REF/bin/python" -c "import scanpy, skmisc, cell2sentence" 2>/dev/null; then
  python3 -m venv "$REF"
  "$REF/bin/pip" install -q -r tests/fixtures/requirements.lock
  "$REF/bin/pip" install -q --no-deps cell2sentence==1.2.0
fi
cargo build --release --locked
target/release/cellsentence bench preprocess --python "$REF/bin/python" "$@"
