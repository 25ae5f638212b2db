#!/usr/bin/env bash
# The GPU check (issue 30): one script a user runs on a CUDA machine after the set-up. It writes
# gpu-check.json and gpu-check.md (and every step's own output and log) into --out:
#   1. env         the libtorch this binary uses, CUDA seen, the device (and nvidia-smi when present);
#   2. parity      GPT-NeoX at Pythia-410M shape (random weights made by transformers), the pooled last
#                  hidden state of real C2S prompts: CUDA f32 vs CPU f32 max-abs (≤ 1e-3), CUDA bf16 vs
#                  CPU f32 cosine per cell (≥ 0.999);
#   3. speed       `bench embed` bf16 against transformers on the same GPU and prompts, as cell2sentence
#                  runs it (batches of 8, left padding, all hidden states; eager and sdpa) and at its best
#                  (sdpa, batches of 32/64/128: the fastest);
#   4. workload    every cell of a real dataset (≥ 4,000 cells) embedded from full and HVG sentences, timed,
#                  and the paper's ~96,000 cells × both sentence kinds extrapolated from that rate;
#   5. mlp         the paper's MLP (5-fold) on those embeddings on the GPU and on the CPU: macro-F1 within 0.01;
#   6. train-lm    tokens/s of the default small LM trained on the GPU.
#
#   scripts/gpu-check.sh [--cpu] [--out DIR] [--bin BIN] [--python PY] [--data-dir DIR] [--tokenizer FILE]
#                        [--dataset ID --label-key KEY]
#
#   --cpu        the dry run: everything on the CPU at a small model shape, fewer prompts (bf16 steps
#                skipped: libtorch's CPU path refuses bf16 here). ~3 min on 2 cores.
#   --bin        the cellsentence binary (default target/release/cellsentence; on a machine with PyTorch
#                2.11 the one from scripts/build-for-libtorch.sh 2.11, with LD_LIBRARY_PATH=<its torch/lib>).
#   --python     a Python with torch and transformers (default /opt/torch/.venv/bin/python3 if present,
#                else .venv-lm/bin/python from scripts/lm-ref-env.sh).
#   --data-dir   folder with kang2018.h5ad (the workload and MLP data; default data/ and ../shared/data).
#   --tokenizer  the Pythia tokenizer.json (default ../shared/tokenizers/gpt-neox-20b/tokenizer.json).
#   --dataset, --label-key   another workload/MLP dataset (default kang2018/cell_type; --cpu: pbmc3k/classified).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CPU=0 DATASET_OPT="" LABEL_OPT="" OUT="" BIN="$ROOT/target/release/cellsentence" PY="" DATA="" TOK="$ROOT/../shared/tokenizers/gpt-neox-20b/tokenizer.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --data-dir) DATA="$2"; shift 2 ;;
    --tokenizer) TOK="$2"; shift 2 ;;
    --dataset) DATASET_OPT="$2"; shift 2 ;;
    --label-key) LABEL_OPT="$2"; shift 2 ;;
    *) echo "error: unknown option '$1' (see the head of $0)" >&2; exit 2 ;;
  esac
done
# paths given relative to where the script was started, before it moves to the repository root
BIN="$(realpath -m "$BIN")" TOK="$(realpath -m "$TOK")"
[ -n "$DATA" ] && DATA="$(realpath -m "$DATA")"
[ -n "$OUT" ] && OUT="$(realpath -m "$OUT")"
if [ -z "$PY" ]; then
  if [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3; else source "$ROOT/scripts/lm-ref-env.sh"; PY="$LMREF/bin/python"; fi
fi
[ -x "$BIN" ] || { echo "error: --bin $BIN is not an executable (build it, or give the 2.11 build)" >&2; exit 2; }
[ -f "$TOK" ] || { echo "error: --tokenizer $TOK not found (the Pythia tokenizer.json)" >&2; exit 2; }
if [ "$CPU" = 1 ]; then
  OUT="${OUT:-$ROOT/.cache/gpu-check-cpu}" DEV="" DT=f32 SHAPE=small N=16 NPAR=16 DATASET=pbmc3k LABEL=classified
else
  OUT="${OUT:-$ROOT/.cache/gpu-check}" DEV="--cuda" DT=bf16 SHAPE=410m N=2048 NPAR=32 DATASET=kang2018 LABEL=cell_type
fi
DATASET="${DATASET_OPT:-$DATASET}" LABEL="${LABEL_OPT:-$LABEL}"
if [ -z "$DATA" ]; then
  for d in "$ROOT/data" "$ROOT/../shared/data"; do [ -f "$d/$DATASET.h5ad" ] && { DATA="$d"; break; }; done
fi
[ -f "$DATA/$DATASET.h5ad" ] || { echo "error: $DATASET.h5ad not found in '${DATA:-data/ or ../shared/data}': give --data-dir" >&2; exit 2; }
export CELLSENTENCE_DATA="$DATA"
WORK="$OUT/work" LOGS="$OUT/logs"
rm -rf "$OUT"; mkdir -p "$WORK" "$LOGS"
cd "$ROOT" # bench embed writes its prompts under .cache/bench
step() { # name, command…: runs it with its log, records seconds and exit status
  local name="$1"; shift
  local t0 t1 rc=0
  t0=$(date +%s%N)
  "$@" > "$LOGS/$name.out" 2> "$LOGS/$name.err" || rc=$?
  t1=$(date +%s%N)
  local ms=$(((t1 - t0) / 1000000)) s
  s=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $s}" >> "$OUT/steps.jsonl"
  echo "[gpu-check] $name: rc $rc, $s s" >&2
  return 0
}
Q="--quiet"
FRESH="--cache $WORK/cache --force" # every embedding computed and timed, never read from a cache

# 1. env
step env "$BIN" env
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true

# 2. the checkpoint (made here by transformers: nothing large travels) and parity
CK="$WORK/ck"
step checkpoint "$PY" "$ROOT/tests/fixtures/make_lm_fixtures.py" --bench "$CK" --shape "$SHAPE" --tokenizer "$TOK"

# 3. speed: as cell2sentence runs it, then transformers at its best (the prompts file also feeds parity)
step bench_c2s "$BIN" $Q bench embed --model "$CK" --python "$PY" --input "$DATASET" --n "$N" --attn eager,sdpa --hf-batch 8 $DEV --dtype "$DT" --out "$OUT/bench_c2s"
head -n "$NPAR" .cache/bench/embed_prompts.jsonl > "$WORK/parity_prompts.jsonl" || true # a failed bench leaves none: parity then fails by name
for b in 32 64 128; do
  step "bench_sdpa_$b" "$BIN" $Q bench embed --model "$CK" --python "$PY" --input "$DATASET" --n "$N" --attn sdpa --hf-batch "$b" $DEV --dtype "$DT" --out "$OUT/bench_sdpa_$b"
done

step parity_cpu_f32 "$BIN" $Q embed $FRESH --model "$CK" --prompts "$WORK/parity_prompts.jsonl" --out "$WORK/parity_cpu_f32.npy"
if [ "$CPU" = 0 ]; then
  step parity_cuda_f32 "$BIN" $Q embed $FRESH --model "$CK" --prompts "$WORK/parity_prompts.jsonl" --cuda --dtype f32 --out "$WORK/parity_cuda_f32.npy"
  step parity_cuda_bf16 "$BIN" $Q embed $FRESH --model "$CK" --prompts "$WORK/parity_prompts.jsonl" --cuda --dtype bf16 --out "$WORK/parity_cuda_bf16.npy"
else # the dry run compares a second CPU run through the same code path
  step parity_cuda_f32 "$BIN" $Q embed $FRESH --model "$CK" --prompts "$WORK/parity_prompts.jsonl" --out "$WORK/parity_cuda_f32.npy"
fi

# 4. the workload: every cell of DATASET, full and HVG sentences (C2S prompts, top 200 genes)
for g in all hvg; do
  step "workload_$g" "$BIN" $Q embed $FRESH --model "$CK" --input "$DATASET" --genes "$g" $DEV --dtype "$DT" --out "$WORK/workload_$g.npy"
done

# 5. the MLP on those embeddings, on the device and on the CPU
MLP_DEV="$DEV"
step mlp_device "$BIN" $Q annotate --embeddings "$WORK/workload_all.npy" --input "$DATASET" --label-key "$LABEL" $MLP_DEV --out "$OUT/mlp_device"
step mlp_cpu "$BIN" $Q annotate --embeddings "$WORK/workload_all.npy" --input "$DATASET" --label-key "$LABEL" --out "$OUT/mlp_cpu"

# 6. train-lm tokens/s (the default small model)
STEPS=$([ "$CPU" = 1 ] && echo 20 || echo 300)
step train_lm "$BIN" $Q train-lm --input "$DATASET" $DEV --config "{\"steps\": $STEPS}" --out "$WORK/small_lm"

RC=0
"$PY" "$ROOT/scripts/gpu_check_summary.py" "$OUT" --cpu "$CPU" --dataset "$DATASET" --bin "$BIN" || RC=$?
rm -rf "$WORK/ck" "$WORK/small_lm" "$WORK/cache" "$WORK"/workload_*.npy # large or not needed back
exit "$RC" # 1: a step failed or a check missed its target (gpu-check.md says which)
