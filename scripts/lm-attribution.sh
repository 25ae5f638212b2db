#!/usr/bin/env bash
# Gene-token attribution (issue 12): which genes of a Baron cell's sentence drive the MLP's predicted
# type, through the pretrained model of experiments/extra/annotation_pretrained.yaml (held out from
# Baron; found in the stage cache by its corpus.json, so run that experiment first). Writes
# results/attribution/top_genes.{csv,md} (top 20 genes per cell type, known pancreas markers flagged)
# and figures/attribution_heatmap.html. Arguments: extra `attribute` options (e.g. --method
# integrated-gradients).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
cargo build --release --locked --bin cellsentence
MODEL="$(python3 - <<'PY'
import glob, json
for p in sorted(glob.glob(".cache/stages/pretrain/*/corpus.json")):
    c = json.load(open(p))
    if c["steps"] == 1000 and "baron_human" in c["held_out"]:
        print(p.rsplit("/", 1)[0])
        break
PY
)"
if [ -z "$MODEL" ]; then
  echo "no pretrained model held out from baron_human in .cache/stages/pretrain: run" >&2
  echo "  target/release/cellsentence run experiments/extra/annotation_pretrained.yaml" >&2
  exit 2
fi
target/release/cellsentence --quiet attribute --model "$MODEL" -i baron_human \
  --markers experiments/markers/pancreas.csv --out results/attribution "$@"
