#!/usr/bin/env bash
# Why training made the small LM's embeddings worse than its random initialisation (issue 12).
# Trains the default small LM (`train-lm`, 4 layers, hidden 256) on Baron for several budgets and
# learning rates, then probes every hidden state of each model (`lm-probe`: 5-fold MLP accuracy and
# macro-F1, between-type share of the variance, mean cosine between cells). Models are cached under
# .cache/lm_diagnosis (a rerun trains only what is missing); tables go to results/lm_diagnosis/.
# About 45 min on 2 cores. Arguments: extra `lm-probe` options.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
scripts/fetch-data.sh
cargo build --release --locked --bin cellsentence
BIN=target/release/cellsentence
WORK=.cache/lm_diagnosis
OUT=results/lm_diagnosis
mkdir -p "$WORK" "$OUT"
train() { # name, config JSON
  [ -f "$WORK/$1/model.safetensors" ] || "$BIN" --quiet train-lm -i baron_human --out "$WORK/$1" --config "$2" >/dev/null
}
# training budget at the default learning rate (1e-3, cosine to 1e-4)
for steps in 1 30 120 480; do
  train "steps_$steps" "{\"steps\": $steps}"
done
"$BIN" --quiet lm-probe -i baron_human --out "$OUT/budget_layers.csv" "$@" \
  --model "$WORK/steps_1" "$WORK/steps_30" "$WORK/steps_120" "$WORK/steps_480"
# learning rate at the default budget (120 steps)
for lr in 0.0001 0.003; do
  train "lr_$lr" "{\"lr\": $lr}"
done
"$BIN" --quiet lm-probe -i baron_human --out "$OUT/lr_layers.csv" "$@" \
  --model "$WORK/lr_0.0001" "$WORK/steps_120" "$WORK/lr_0.003"
# the training objective at the default learning rate: the corpus log-frequency prior added to the
# logits (`logit_prior`), and that prior with each sentence's genes shuffled at every draw
# (`shuffle_genes`: only which genes go together is left to learn, not their rank)
train prior_120 '{"steps": 120, "logit_prior": true}'
for steps in 120 480; do
  train "shuffle_prior_$steps" "{\"steps\": $steps, \"logit_prior\": true, \"shuffle_genes\": true}"
done
"$BIN" --quiet lm-probe -i baron_human --out "$OUT/objective_layers.csv" "$@" \
  --model "$WORK/steps_120" "$WORK/prior_120" "$WORK/shuffle_prior_120" "$WORK/shuffle_prior_480"
