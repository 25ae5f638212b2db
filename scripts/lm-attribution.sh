#!/usr/bin/env bash
# Gene-token attribution (issue 12): which genes of a Baron cell's sentence drive the MLP's predicted
# type, through the committed pretrained model models/pretrained (held out from Baron). Writes
# results/attribution/top_genes.{csv,md} (top 20 genes per cell type, known pancreas markers flagged)
# and figures/attribution_heatmap.html. Arguments: extra `attribute` options (e.g. --method
# integrated-gradients).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
cargo build --release --locked --bin cellsentence
MODEL=models/pretrained   # committed; held out from baron_human (see its corpus.json)
target/release/cellsentence --quiet attribute --model "$MODEL" -i baron_human \
  --markers experiments/markers/pancreas.csv --out results/attribution "$@"
