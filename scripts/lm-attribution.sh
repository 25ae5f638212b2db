#!/usr/bin/env bash
# Gene-token attribution: which genes of a Baron cell's sentence drive a prediction of its type.
#   1. (issue 12) the paper's MLP on the frozen embedding of the committed pretrained model
#      models/pretrained (held out from Baron) → results/attribution/
#   2. (issue 29) the LM's own answer, for the LM fine-tuned for annotation on Baron (Cell2Sentence's
#      cell-type prediction, random start, the settings of the `lm_answer` rows of
#      experiments/extra/lm_finetune_annotation.yaml; trained here, ~4 min on 2 cores, not committed)
#      → results/attribution_answer/
# Each writes top_genes.{csv,md} (top 20 genes per cell type, known pancreas markers flagged) and
# figures/attribution_heatmap.html. Arguments: `mlp`, `answer` or nothing (both), then extra
# `attribute` options (e.g. --method integrated-gradients).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
WHICH=all
case "${1:-}" in mlp|answer) WHICH=$1; shift ;; esac
cargo build --release --locked --bin cellsentence
BIN=target/release/cellsentence
MARKERS=experiments/markers/pancreas.csv
if [[ $WHICH != answer ]]; then
  MODEL=models/pretrained   # committed; held out from baron_human (see its corpus.json)
  $BIN --quiet attribute --model "$MODEL" -i baron_human --markers "$MARKERS" \
    --out results/attribution "$@"
fi
if [[ $WHICH != mlp ]]; then
  ANSWER=.cache/attribution/baron_answer_model
  $BIN --quiet finetune-lm --task cell_type -i baron_human \
    --config '{"steps": 400, "eval_every": 50}' --out "$ANSWER" > /dev/null
  $BIN --quiet attribute --model "$ANSWER" -i baron_human --markers "$MARKERS" \
    --out results/attribution_answer "$@"
fi
