"""Training throughput of one full optimizer step: forward, backward, StableAdamW step.

What is timed, per step: `model(**batch)` (inside torch.autocast for bf16, as Composer's
amp_bf16 does: fp32 weights and optimizer state, bf16 matmuls), `loss.backward()`, gradient
clipping when the run's optimizer config asks for it (adamw only), `optimizer.step()` and
`optimizer.zero_grad(set_to_none=True)`. The model is `flexbert.model.FlexBertForMaskedLM` and
the optimizer comes from `flexbert.train.optim.build_optimizer(model, run.optimizer)`: the same
objects `flexbert.train.builder.build_trainer` hands to Composer. Composer itself is left out
(a plain loop): no LR scheduler step, callbacks, metrics or microbatch splitting, so one step is
one microbatch of `--rows` rows; Composer's per-step overhead is not measured here.

Batches are synthetic but shaped like the packer's output (docs/ARCHITECTURE.md, "Packed
batch"): document lengths ~ Normal(seq_len/4, seq_len/16), rounded, clipped to [8, seq_len],
packed in order into `--rows` rows of at most seq_len tokens (a document that does not fit
starts the next row), each row holding whole documents; position_ids restart per document;
30% of tokens (`mlm_probability` of the run) carry a label and have their input replaced by
[MASK]; the model's sparse MLM head runs on the labelled tokens only. `--pad-to-budget` pads
every row to seq_len with `flexbert.data.batching.pad_rows` (static shapes, useful with
`--compile`). Each step gets its own batch (different seeds), so the real token count varies
a little per step; the reported tokens/s is the median over timed steps of
(real tokens of the step / step time).

Timing: `--warmup` untimed steps, then the median of `--steps` timed steps; CUDA: CUDA events
around each step and `torch.cuda.synchronize()`; CPU: `time.perf_counter()`.

FLOPs/token is `flexbert.train.flops.flops_per_token(model_cfg, seq_len, mlm_probability)`:
    6 x N_encoder + sum over layers of 12 x d x context + 6 x N_head x mlm_probability
(context = seq_len for global layers, min(seq_len, local_attention + 1) for local ones; the
full derivation is in flexbert/train/flops.py). Attention is counted at seq_len (the usual
upper bound; packed documents are shorter, so the real attention work is smaller).
MFU = tokens/s x FLOPs/token / peak FLOP/s, peak from `flexbert.train.flops.peak_flops` for the
CUDA device and dtype; not reported on CPU (no peak known).

Peak memory: CUDA `torch.cuda.max_memory_allocated()` over the timed steps (weights, grads,
optimizer state, activations); CPU: the process's peak resident set size so far
(`resource.getrusage(...).ru_maxrss`, so it includes everything the process touched before).

Reference: ~312,000 tokens/s per H100 for ModernBERT-base at seq_len 1024 (the paper's pace
used by this project); the ratio to it is printed on CUDA only, and is like-for-like only for
`--model modernbert-base --seq-len 1024 --dtype bf16` on an H100.

Usage:
  python bench/train_throughput.py --model tiny --seq-len 1024 --device cpu --dtype fp32
  python bench/train_throughput.py --model modernbert-base --seq-len 1024 8192 --rows 16 --dtype bf16
  python bench/train_throughput.py --model yamls/modernbert-base/1-pretrain.yaml --seq-len 1024
`--model` is a preset name (yamls/models/NAME.yaml), a run YAML (its model section, optimizer
and data.mlm_probability are used) or a model-only YAML (default optimizer, mlm 0.3).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from flexbert.config.loading import load_run_config  # noqa: E402
from flexbert.config.model import load_model_config  # noqa: E402
from flexbert.config.optim import OptimizerConfig  # noqa: E402
from flexbert.config.strict import ConfigError  # noqa: E402
from flexbert.data.batching import pad_rows  # noqa: E402
from flexbert.model import FlexBertForMaskedLM  # noqa: E402
from flexbert.train.flops import count_params, flops_per_token, peak_flops  # noqa: E402
from flexbert.train.optim import build_optimizer  # noqa: E402

PAPER_TOKENS_PER_S = 312_000  # ModernBERT-base, seq_len 1024, per H100 (reference only)
DEFAULT_MLM = 0.3
MODEL_INPUTS = ("input_ids", "labels", "cu_seqlens", "max_seqlen", "position_ids")


@dataclasses.dataclass
class Setup:
    """What to train: the model config, the optimizer config and the masking rate."""

    model_cfg: object
    optimizer: OptimizerConfig
    mlm_probability: float
    source: str


def load_setup(model: str) -> Setup:
    """A preset name, a run YAML or a model-only YAML -> Setup."""
    if not model.endswith((".yaml", ".yml")):
        return Setup(load_model_config({"preset": model}), OptimizerConfig(), DEFAULT_MLM, f"preset {model}")
    try:
        run = load_run_config(model)
    except ConfigError:
        # not a run file (e.g. yamls/models/tiny.yaml): model keys only
        return Setup(load_model_config(model), OptimizerConfig(), DEFAULT_MLM, f"model YAML {model}")
    return Setup(run.model_cfg, run.cfg.optimizer, run.cfg.data.mlm_probability, f"run YAML {model}")


def make_batch(seq_len: int, rows: int, cfg, mlm: float, seed: int, pad_to_budget: bool) -> dict:
    """One synthetic packed batch with the packer's keys (docs/ARCHITECTURE.md)."""
    g = torch.Generator().manual_seed(seed)
    row_lens: list[list[int]] = [[]]
    while True:
        n = int((torch.randn((), generator=g) * (seq_len / 16) + seq_len / 4).round().clamp(8, seq_len))
        if sum(row_lens[-1]) + n > seq_len:
            if len(row_lens) == rows:
                break
            row_lens.append([])
        row_lens[-1].append(n)
    lengths = [n for row in row_lens for n in row]
    T = sum(lengths)
    ids = torch.randint(5, cfg.vocab_size, (T,), generator=g)
    labels = torch.full((T,), -100, dtype=torch.long)
    pick = torch.rand(T, generator=g) < mlm
    labels[pick] = ids[pick]
    ids[pick] = cfg.mask_token_id
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    row_tokens = torch.tensor([sum(r) for r in row_lens], dtype=torch.int64)
    row_offsets = torch.zeros(rows + 1, dtype=torch.int64)
    row_offsets[1:] = torch.cumsum(row_tokens, 0)
    batch = dict(input_ids=ids, labels=labels, position_ids=torch.cat([torch.arange(n) for n in lengths]),
                 cu_seqlens=cu, max_seqlen=max(lengths), row_offsets=row_offsets, row_num_tokens=row_tokens,
                 num_tokens=T)
    if pad_to_budget:
        batch = pad_rows(batch, seq_len, cfg.pad_token_id)
    return batch


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (batch[k].to(device, non_blocking=True) if isinstance(batch[k], torch.Tensor) else batch[k])
            for k in MODEL_INPUTS}


def flops_breakdown(cfg, seq_len: int, mlm: float) -> tuple[float, float, float, float]:
    """(total, 6 x N_encoder, attention, head) in FLOPs per token; total == flops_per_token(...)."""
    total = flops_per_token(cfg, seq_len, mlm)
    counts = count_params(cfg)
    enc = 6.0 * counts["encoder"]
    n_head = counts["head"] + (cfg.hidden_size * cfg.vocab_size if getattr(cfg, "tie_word_embeddings", True) else 0)
    head = 6.0 * n_head * (mlm if getattr(cfg, "sparse_prediction", True) else 1.0)
    return total, enc, total - enc - head, head


def measure(setup: Setup, seq_len: int, args, device: torch.device, dtype: torch.dtype) -> dict:
    cfg = setup.model_cfg
    if seq_len > cfg.max_position_embeddings:
        raise SystemExit(f"--seq-len {seq_len} is longer than the model's max_position_embeddings "
                         f"({cfg.max_position_embeddings}); use a config made for it (e.g. a context-extension YAML)")
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(cfg).to(device)
    model.train()
    optimizer = build_optimizer(model, setup.optimizer)  # after .to(device): it picks kernels by device
    step_model = torch.compile(model) if args.compile else model
    clip = getattr(setup.optimizer, "gradient_clipping", None)
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    n_steps = args.warmup + args.steps
    batches = [make_batch(seq_len, args.rows, cfg, setup.mlm_probability, seed=1000 + i, pad_to_budget=args.pad_to_budget)
               for i in range(n_steps)]
    real = [b["num_tokens"] for b in batches]
    on_device = [_to(b, device) for b in batches]

    def step(batch):
        with autocast:
            out = step_model(**batch)
        out.loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss

    losses = []
    for i in range(args.warmup):
        losses.append(float(step(on_device[i])))
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup, n_steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step(on_device[i])
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            loss = step(on_device[i])
            times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    kernel = model.model.attention_kernel(device, dtype).name  # resolved on the first forward
    if cuda:
        peak_mem = torch.cuda.max_memory_allocated(device)
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    timed_real = real[args.warmup:]
    tps = statistics.median(n / t for n, t in zip(timed_real, times))
    fpt, enc, attn, head = flops_breakdown(cfg, seq_len, setup.mlm_probability)
    peak = peak_flops(torch.cuda.get_device_name(device), "bf16" if dtype == torch.bfloat16 else "fp32") if cuda else None
    mfu = tps * fpt / peak if peak else None
    budget = args.rows * seq_len
    result = dict(seq_len=seq_len, rows=args.rows, tokens_per_step=statistics.mean(timed_real),
                  fill=statistics.mean(timed_real) / budget, step_s=statistics.median(times), tokens_per_s=tps,
                  flops_per_token=fpt, mfu=mfu, peak_flops=peak, peak_mem_bytes=peak_mem,
                  losses=losses, kernel=kernel, paper_ratio=tps / PAPER_TOKENS_PER_S if cuda else None)

    print(f"== seq_len {seq_len}: {args.rows} rows/step, {result['tokens_per_step']:.0f} real tokens/step "
          f"({100 * result['fill']:.1f}% of {budget}{', rows padded to seq_len' if args.pad_to_budget else ''}), "
          f"{args.warmup} warm-up + {args.steps} timed steps; attention kernel {kernel}", flush=True)
    print(f"  step time (median)  {result['step_s'] * 1e3:.1f} ms   (all: {', '.join(f'{t * 1e3:.0f}' for t in times)} ms)")
    print(f"  tokens/s (real)     {tps:,.0f}")
    print(f"  FLOPs/token         {fpt:,.0f} = 6 x N_encoder {enc:,.0f} + attention sum 12 x d x context "
          f"{attn:,.0f} + head 6 x N_head x {setup.mlm_probability:g} {head:,.0f}")
    print(f"  achieved            {tps * fpt / 1e12:.4f} TFLOP/s")
    if mfu is not None:
        print(f"  MFU                 {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s ({'bf16' if dtype == torch.bfloat16 else 'fp32'} dense peak)")
    else:
        print(f"  MFU                 n/a (no known peak for {'this CUDA device' if cuda else 'CPU'})")
    what = "CUDA max_memory_allocated" if cuda else "process peak RSS"
    print(f"  peak memory         {peak_mem / 2**30:.2f} GiB ({what})")
    print(f"  loss                {losses[0]:.3f} (first) -> {losses[-1]:.3f} (last)")
    if cuda:
        like = args.model == "modernbert-base" and seq_len == 1024 and dtype == torch.bfloat16
        print(f"  vs paper pace       {tps:,.0f} / {PAPER_TOKENS_PER_S:,} tok/s per H100 = {result['paper_ratio']:.2f}x"
              f"{'' if like else ' (not like-for-like: the reference is modernbert-base, 1024, bf16)'}")
    del model, step_model, optimizer, on_device
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> list[dict]:
    """Parse arguments, run every --seq-len, print the numbers; returns one result dict per seq_len."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="modernbert-base", help="preset name (yamls/models), run YAML or model YAML")
    p.add_argument("--seq-len", type=int, nargs="+", default=[1024], help="row length(s), e.g. 1024 8192")
    p.add_argument("--rows", type=int, help="packed rows per step (default: CUDA 16 at 1024, scaled down "
                                            "for longer rows to keep tokens/step ~16k; CPU 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (as compile: true does)")
    p.add_argument("--pad-to-budget", action="store_true", help="pad every row to seq_len (static shapes)")
    p.add_argument("--warmup", type=int, help="untimed steps (default: CUDA 5, CPU 1; more with --compile)")
    p.add_argument("--steps", type=int, help="timed steps, median reported (default: CUDA 20, CPU 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--attn-backend", help="attention kernel (model.attn_backend: auto, torch_flash, flex, sdpa, ...)")
    p.add_argument("--json", help="also append one JSON line per seq_len to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if cuda else "fp32")]
    args.warmup = args.warmup if args.warmup is not None else ((5 if cuda else 1) + (5 if args.compile else 0))
    args.steps = args.steps or (20 if cuda else 3)
    setup = load_setup(args.model)
    if args.attn_backend:
        setup.model_cfg = dataclasses.replace(setup.model_cfg, attn_backend=args.attn_backend)
    cfg = setup.model_cfg
    n_params = count_params(cfg)
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"model {args.model} ({setup.source}): {n_params['total']:,} params ({n_params['encoder']:,} encoder), "
          f"{cfg.num_hidden_layers} layers, d {cfg.hidden_size}; optimizer {setup.optimizer.name} "
          f"lr {setup.optimizer.lr:g}; mlm {setup.mlm_probability:g} (sparse head)", flush=True)
    print(f"device {device} ({where}); {'bf16 autocast' if dtype == torch.bfloat16 else 'fp32'}; "
          f"compile {args.compile}; attention {cfg.attn_backend}; torch {torch.__version__}; "
          f"load avg (1 min) {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for seq_len in args.seq_len:
        run_args = argparse.Namespace(**vars(args))
        if run_args.rows is None:
            run_args.rows = max(1, 16 * 1024 // seq_len) if cuda else 2
        try:
            result = measure(setup, seq_len, run_args, device, dtype)
        except torch.OutOfMemoryError as e:  # report and go on with the next length
            print(f"== seq_len {seq_len}: out of memory with {run_args.rows} rows ({str(e).splitlines()[0]})", flush=True)
            if cuda:
                torch.cuda.empty_cache()
            continue
        results.append(result)
        if args.json:
            precision = "bf16" if dtype == torch.bfloat16 else "fp32"
            record = dict(result, model=args.model, device=where, dtype=precision, compile=args.compile,
                          attn_backend=cfg.attn_backend, pad_to_budget=args.pad_to_budget, torch=torch.__version__)
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
