#!/usr/bin/env bash
# Does context extension work? The tiny three-phase chain (yamls/tiny/) at CPU size, probed at the
# end of every phase by the `long_context` callback with identical settings, then compared.
#
#   bash bench/long_context_cpu.sh [OUT]          (default OUT: runs/long_context_cpu)
#
# Phase 1 pretrains at 256 tokens (global RoPE theta 10k); phase 2 extends to 2048 tokens
# (global theta 160k, local 10k) from phase 1's weights and optimizer moments; phase 3 decays
# at 2048. The 8x extension ratio is the recipe's (1024 -> 8192) at a size two CPU cores can
# train in ~15 minutes; `bench/long_context_gpu.sh` runs the chain at the recipe's lengths.
# Every phase is probed up to 2048 tokens, so phase 1 is also probed beyond its trained context.
# Results: OUT/<phase>/long_context/{results.json,long_context.png}, OUT/comparison/comparison.{md,png,json}.
# Environment: PYTHON (default python), P1_STEPS / P2_STEPS / P3_STEPS to change the phase lengths.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-runs/long_context_cpu}
P1_STEPS=${P1_STEPS:-120}
P2_STEPS=${P2_STEPS:-40}
P3_STEPS=${P3_STEPS:-10}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} WANDB_MODE=offline HF_HUB_OFFLINE=1

[ -f "$OUT/demo/mds/val/index.json" ] || "$PY" data_prep/demo_corpus.py --output "$OUT/demo" --no-progress

# Identical probe settings in every phase: the same documents, so the phases are comparable.
PROBES=(
  "callbacks.long_context.corpus=$OUT/demo/mds/val"
  "callbacks.long_context.max_length=2048"
  "callbacks.long_context.distances=[16,32,64,128,256,512,1024,2032]"
  "callbacks.long_context.mlm_samples=16"
  "callbacks.long_context.passkey_lengths=[256,512,1024,2048]"
  "callbacks.long_context.passkey_depths=[0.0,0.5,1.0]"
  "callbacks.long_context.passkey_samples=4"
  "callbacks.long_context.position_docs=6"
)
COMMON=("data.local=$OUT/demo/mds" "save_overwrite=true" "console_log_interval=10ba")

time "$PY" train.py yamls/tiny/1-pretrain.yaml "${COMMON[@]}" "${PROBES[@]}" \
  save_folder="$OUT/1-pretrain" data.max_seq_len=256 model.max_position_embeddings=256 \
  global_train_batch_size=32 device_train_microbatch_size=32 \
  max_duration="${P1_STEPS}ba" scheduler.t_warmup=10ba save_interval="${P1_STEPS}ba"

time "$PY" train.py yamls/tiny/2-context-extension.yaml "${COMMON[@]}" "${PROBES[@]}" \
  save_folder="$OUT/2-context-extension" init_from.path="$OUT/1-pretrain/latest-rank0.pt" \
  data.max_seq_len=2048 model.max_position_embeddings=2048 \
  global_train_batch_size=4 device_train_microbatch_size=4 \
  max_duration="${P2_STEPS}ba" save_interval="${P2_STEPS}ba"

time "$PY" train.py yamls/tiny/3-decay.yaml "${COMMON[@]}" "${PROBES[@]}" \
  save_folder="$OUT/3-decay" init_from.path="$OUT/2-context-extension/latest-rank0.pt" \
  data.max_seq_len=2048 model.max_position_embeddings=2048 \
  global_train_batch_size=4 device_train_microbatch_size=4 \
  max_duration="${P3_STEPS}ba" save_interval="${P3_STEPS}ba"

"$PY" -m flexbert.long_context.compare "$OUT/1-pretrain" "$OUT/2-context-extension" "$OUT/3-decay" \
  --label "phase 1: 256 tok, θ 10k" --label "phase 2: 2048 tok, θ 160k" --label "phase 3: decay" --output "$OUT/comparison" \
  --title "tiny chain on CPU: probes up to 2048 tokens"
