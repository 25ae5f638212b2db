#!/usr/bin/env bash
# The main job: installs what it needs, then runs the default experiments on the bundled data.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
cargo run --release --locked --bin cellsentence -- reproduce "$@"
