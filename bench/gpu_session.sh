#!/usr/bin/env bash
# One short, prepared GPU session: the CUDA tests, then training throughput, then three Composer
# runs of the demo model (FSDP + compile, compile, FSDP), then FlexBERT vs HF ModernBERT. Each step has its own time limit
# and a failed step does not stop the next; everything is logged to $OUT (default ./gpu_out).
#
# Made for a lent machine that has torch but not this project's other packages and no registry:
# put the missing wheels in .whl/ (see BENCHMARKS.md, "Measuring on a GPU") and the demo data in
# data/demo (python data_prep/demo_corpus.py --output data/demo), then run
#   bash bench/gpu_session.sh
# ONLY="step names" runs just those steps, e.g. ONLY="gpu_tests base_1024" bash bench/gpu_session.sh
# On a machine where the project is installed (pip install -e .[dev]) .whl/ may be absent.
#
# ONLY=issue15 runs the training-speed measurement of issue 15 (item 6), sized for ~8 minutes on an
# H200 (step limits sum to 525 s; expected ~6 min): the GPU tests of the MLM loss and of the sdpa
# kernel's layouts and the recompile count of compiled training, the dense-vs-chunked loss bench
# (bf16, M 4096 and 17408, ModernBERT-base vocab), then tokens/s, MFU, peak memory and the share of
# step time outside forward/backward/optimizer through the real Composer Trainer
# (bench/train_throughput.py --trainer, the shipped phase YAMLs, synthetic lognormal-length MDS
# documents through the real packer) for base and large at 1024 and 8192, and base at 1024 once more
# with model.mlm_loss=chunked (auto is dense on CUDA until this measures it). JSON lines go to $OUT/issue15.jsonl.
set -uo pipefail
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
ISSUE15="i15_env i15_loss_tests i15_loss i15_base_1024 i15_base_1024_chunked i15_base_8192 i15_large_1024 i15_large_8192"
if [ "${ONLY:-}" = "issue15" ]; then ONLY="$ISSUE15"; fi

step() {  # step NAME SECONDS CMD...: run with a time limit, log it, go on whatever happens
    local name=$1 limit=$2; shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
    local t0=$SECONDS
    echo "===== [$name] $*" | tee -a "$LOG"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "===== [$name] rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG"
    echo "$name rc=$rc $((SECONDS - t0))s" >> "$OUT/steps.txt"
}

step env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv; \
    $py -c 'import torch, composer, streaming, optimi, transformers; print(\"torch\", torch.__version__, \"composer\", composer.__version__, \"streaming\", streaming.__version__, \"transformers\", transformers.__version__, torch.cuda.get_device_name())'"
step gpu_tests 180 "$py" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_kernels_fast.py tests/test_model_attention.py
TT=(bench/train_throughput.py --json "$OUT/train.jsonl")
step base_1024 90 "$py" "${TT[@]}" --model modernbert-base --seq-len 1024 --rows 64
step base_1024_compile 180 "$py" "${TT[@]}" --model modernbert-base --seq-len 1024 --rows 64 --compile --pad-to-budget
step base_8192 90 "$py" "${TT[@]}" --model modernbert-base --seq-len 8192 --rows 8
step large_1024 90 "$py" "${TT[@]}" --model modernbert-large --seq-len 1024 --rows 32
step large_8192 90 "$py" "${TT[@]}" --model modernbert-large --seq-len 8192 --rows 4
DEMO_GPU=(train.py yamls/demo.yaml device=gpu precision=amp_bf16 max_duration=200ba global_train_batch_size=64
          device_train_microbatch_size=64 console_log_interval=100ba eval_interval=100ba save_interval=200ba)
step composer_fsdp_compile 150 "$py" -m composer.cli.launcher -n 1 "${DEMO_GPU[@]}" compile=true \
    fsdp_config.sharding_strategy=FULL_SHARD save_folder=/tmp/run_fc export_hf=/tmp/run_fc/hf run_name=gpu-fsdp-compile
step composer_compile 120 "$py" -m composer.cli.launcher -n 1 "${DEMO_GPU[@]}" compile=true \
    save_folder=/tmp/run_c export_hf=null run_name=gpu-compile
step composer_fsdp 90 "$py" -m composer.cli.launcher -n 1 "${DEMO_GPU[@]}" \
    fsdp_config.sharding_strategy=FULL_SHARD save_folder=/tmp/run_f export_hf=null run_name=gpu-fsdp
step base_1024_flex 90 "$py" "${TT[@]}" --model modernbert-base --seq-len 1024 --rows 64 --attn-backend flex
step vs_hf 150 "$py" bench/model_throughput.py --model modernbert-base --set short

# ---- issue 15, item 6 (ONLY=issue15): Composer-path throughput and the fused MLM loss on CUDA, bf16
step i15_env 15 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    $py -c 'import torch, composer, transformers; print(\"torch\", torch.__version__, \"composer\", composer.__version__, \"transformers\", transformers.__version__)'"
step i15_loss_tests 90 "$py" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_mlm_loss.py tests/test_attention_cpu_fastpath.py tests/test_recompiles.py
step i15_loss 50 "$py" bench/mlm_loss.py --json "$OUT/issue15.jsonl"
TR=(bench/train_throughput.py --trainer --warmup 3 --steps 10 --json "$OUT/issue15.jsonl")
step i15_base_1024 70 "$py" "${TR[@]}" --model yamls/modernbert-base/1-pretrain.yaml --rows 64
step i15_base_1024_chunked 70 "$py" "${TR[@]}" --model yamls/modernbert-base/1-pretrain.yaml --rows 64 --mlm-loss chunked
step i15_base_8192 70 "$py" "${TR[@]}" --model yamls/modernbert-base/2-context-extension.yaml --rows 8
step i15_large_1024 80 "$py" "${TR[@]}" --model yamls/modernbert-large/1-pretrain.yaml --rows 32
step i15_large_8192 80 "$py" "${TR[@]}" --model yamls/modernbert-large/2-context-extension.yaml --rows 4
echo "===== done" | tee -a "$LOG"
cat "$OUT/steps.txt"
