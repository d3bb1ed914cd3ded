#!/usr/bin/env bash
# Does context extension work? The three-phase chain at the recipe's lengths (1024 -> 8192, global RoPE
# theta 10k -> 160k), for one GPU: the same chain as bench/long_context_cpu.sh, long enough for a small
# model to learn to copy, probed at the end of every phase up to 8192 tokens, then compared.
#
#   bash bench/long_context_gpu.sh [OUT]          (default OUT: runs/long_context_gpu)
#
# Model: the demo size (d 128, 4 layers, 4 heads, local window 128 = ±64; layers 0 and 3 global).
# Data: the offline demo corpus built at 32 MB (Python's sources and docs; nothing downloaded).
# Budget on one H200 (estimate, not measured: no GPU was available when this was written): phase 1
# 3000 steps x 32 rows x 1024 tokens (98M tokens), phase 2 600 steps x 4 x 8192 (20M), phase 3 200
# steps x 4 x 8192 (6.5M), three probe runs at 8192 tokens with the default settings: about 10-15
# minutes in bf16. Each train.py call is limited by TIMEOUT seconds (default 900).
# Environment: PYTHON, P1_STEPS / P2_STEPS / P3_STEPS, DEVICE (gpu), PRECISION (amp_bf16), TIMEOUT,
# DRY_RUN=1 (check the three configs with train.py --dry-run and stop; works on CPU).
# Results: OUT/<phase>/long_context/{results.json,long_context.png}, OUT/comparison/comparison.{md,png,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-runs/long_context_gpu}
P1_STEPS=${P1_STEPS:-3000}
P2_STEPS=${P2_STEPS:-600}
P3_STEPS=${P3_STEPS:-200}
DEVICE=${DEVICE:-gpu}
PRECISION=${PRECISION:-amp_bf16}
TIMEOUT=${TIMEOUT:-900}
export WANDB_MODE=offline HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

[ -f "$OUT/demo/mds/val/index.json" ] || "$PY" data_prep/demo_corpus.py --output "$OUT/demo" --max-mb 32 --no-progress

MODEL=(model.hidden_size=128 model.intermediate_size=256 model.num_attention_heads=4 model.local_attention=128)
# Identical probe settings in every phase (defaults at max_length 8192), so the phases are comparable.
PROBES=("callbacks.long_context.corpus=$OUT/demo/mds/val" "callbacks.long_context.max_length=8192"
        "callbacks.long_context.mlm_samples=32" "callbacks.long_context.passkey_samples=8")
COMMON=("data.local=$OUT/demo/mds" "save_overwrite=true" "console_log_interval=50ba" "device=$DEVICE"
        "precision=$PRECISION" "${MODEL[@]}" "${PROBES[@]}")
EXTRA=()
[ "${DRY_RUN:-0}" = "1" ] && EXTRA=(--dry-run)

run() { timeout --kill-after=30 "$TIMEOUT" "$PY" train.py "$@" "${EXTRA[@]}"; }

time run yamls/tiny/1-pretrain.yaml "${COMMON[@]}" save_folder="$OUT/1-pretrain" \
  global_train_batch_size=32 device_train_microbatch_size=32 optimizer.lr=2e-3 \
  max_duration="${P1_STEPS}ba" scheduler.t_warmup=100ba save_interval="${P1_STEPS}ba"

time run yamls/tiny/2-context-extension.yaml "${COMMON[@]}" save_folder="$OUT/2-context-extension" \
  init_from.path="$OUT/1-pretrain/latest-rank0.pt" global_train_batch_size=4 device_train_microbatch_size=4 \
  optimizer.lr=1e-3 max_duration="${P2_STEPS}ba" save_interval="${P2_STEPS}ba"

time run yamls/tiny/3-decay.yaml "${COMMON[@]}" save_folder="$OUT/3-decay" \
  init_from.path="$OUT/2-context-extension/latest-rank0.pt" global_train_batch_size=4 device_train_microbatch_size=4 \
  optimizer.lr=1e-3 max_duration="${P3_STEPS}ba" save_interval="${P3_STEPS}ba"

[ "${DRY_RUN:-0}" = "1" ] && exit 0
"$PY" -m flexbert.long_context.compare "$OUT/1-pretrain" "$OUT/2-context-extension" "$OUT/3-decay" \
  --label "phase 1: 1024 tok, θ 10k" --label "phase 2: 8192 tok, θ 160k" --label "phase 3: decay" --output "$OUT/comparison" \
  --title "demo-size chain on one GPU: probes up to 8192 tokens"
