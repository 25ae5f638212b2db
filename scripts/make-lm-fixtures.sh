#!/usr/bin/env bash
# Regenerates tests/fixtures/lm/ (tiny transformers GPT-NeoX checkpoints, their hidden states and logits,
# and Python `tokenizers` encodings of 1,000 prompts) with the pinned reference tools in .venv-lm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/lm-ref-env.sh"
"$ROOT/scripts/fetch-data.sh"
"$LMREF/bin/python" "$ROOT/tests/fixtures/make_lm_fixtures.py" "$@"
