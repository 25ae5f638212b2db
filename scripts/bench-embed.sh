#!/usr/bin/env bash
# Embedding benchmark: cellsentence vs transformers (eager, sdpa) on a random-weight Pythia-410M checkpoint
# made here with transformers (not committed), 64 C2S prompts; writes results/benchmarks/embed_*.{md,csv,json}.
# Extra arguments go to `cellsentence bench embed` (e.g. --cuda --dtype bf16, --n 16).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
source scripts/lm-ref-env.sh
scripts/fetch-data.sh
CK=.cache/bench/pythia-410m-random
if [ ! -f "$CK/model.safetensors" ]; then
  "$LMREF/bin/python" tests/fixtures/make_lm_fixtures.py --bench "$CK"
fi
cargo build --release --locked
target/release/cellsentence bench embed --model "$CK" --python "$LMREF/bin/python" "$@"
