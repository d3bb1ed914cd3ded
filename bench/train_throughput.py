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

Three modes (one per run):
- `--data synthetic` (default): the plain loop above on the synthetic batches just described.
- `--data packer`: the same plain loop on batches from the real training loader
  (`flexbert.data.loader.build_train_loader`: MDS read -> best-fit packer -> MLM masking) over an
  MDS dataset: `--mds FOLDER` (one with index.json, e.g. a real corpus), or else synthetic
  documents written to a temporary MDS folder with the length mix `--length-mix`:
    lognormal (default): lengths ~ LogNormal(ln 400, 1.1) clipped to [16, 32768] tokens (median 400,
      mean ~730, 7% longer than 2048): a web-text-like mix, assumed, not fitted to a corpus;
    normal: Normal(seq_len/4, seq_len/16), the synthetic mode's lengths.
  Documents longer than seq_len are split by the packer (data.long_documents: split). The batches
  are fetched before timing; the fill they got (real tokens / rows x seq_len) and the loader's
  time per batch are printed.
- `--trainer`: the real Composer Trainer built by `flexbert.train.builder.build_trainer` (what
  train.py runs) from the run YAML `--model` (a shipped config such as
  yamls/modernbert-base/1-pretrain.yaml), trained for --warmup + --steps batches of --rows rows
  (microbatch = batch, no batch-size warmup), on `--mds` or the synthetic MDS folder above, with the
  run's own callbacks, metrics, optimizer, scheduler and precision. The bench overrides what would
  write or read elsewhere (save_folder, autoresume, init_from, load_path, export_hf, loggers,
  evaluation, tokenizer; printed) and takes further `--set KEY=VALUE` overrides. A callback times
  each step (BATCH_END to BATCH_END) and its parts: data loading (BEFORE_DATALOADER ->
  AFTER_DATALOADER), forward (+ loss), backward, optimizer.step (step hooks); "other" is the rest of
  the step (training metrics, gradient clipping, callbacks, Composer's bookkeeping). On CUDA the
  boundaries are CUDA events on the current stream (GPU timeline, no extra synchronisation); on CPU
  perf_counter. Reported: real tokens/s (median over steps of real tokens / step time), MFU by the
  formula below (CUDA only), peak memory over the timed steps (CUDA max_memory_allocated; CPU peak
  resident size VmHWM after a reset at the first timed step) and the share of step time outside
  forward / backward / optimizer.

Usage:
  python bench/train_throughput.py --model tiny --seq-len 1024 --device cpu --dtype fp32
  python bench/train_throughput.py --model modernbert-base --seq-len 1024 8192 --rows 16 --dtype bf16
  python bench/train_throughput.py --model yamls/modernbert-base/1-pretrain.yaml --seq-len 1024
  python bench/train_throughput.py --model modernbert-base --data packer --seq-len 1024 --rows 64
  python bench/train_throughput.py --trainer --model yamls/modernbert-base/1-pretrain.yaml --rows 64
`--model` is a preset name (yamls/models/NAME.yaml), a run YAML (its model section, optimizer
and data.mlm_probability are used) or a model-only YAML (default optimizer, mlm 0.3); with
`--trainer` it must be a run YAML.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from flexbert.train.loading import load_run  # noqa: E402
from flexbert.config.model import load_model_config  # noqa: E402
from flexbert.config.optim import OptimizerConfig  # noqa: E402
from flexbert.config.strict import ConfigError  # noqa: E402
from flexbert.data.batching import pad_rows  # noqa: E402
from flexbert.data.packed_batch import MODEL_INPUTS  # noqa: E402
from flexbert.model import FlexBertForMaskedLM  # noqa: E402
from flexbert.train.flops import count_params, flops_per_token, peak_flops, precision_key  # noqa: E402
from flexbert.train.optim import build_optimizer  # noqa: E402

PAPER_TOKENS_PER_S = 312_000  # ModernBERT-base, seq_len 1024, per H100 (reference only)
DEFAULT_MLM = 0.3


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
        run = load_run(model)
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


# ---------------------------------------------------------------------------------------------
# batches from the real loader (--data packer, --trainer)
# ---------------------------------------------------------------------------------------------
def _lognormal_lengths(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    return np.clip(np.round(rng.lognormal(np.log(400.0), 1.1, n)), 16, 32768)


def _normal_lengths(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    return np.clip(np.round(rng.normal(seq_len / 4, seq_len / 16, n)), 8, seq_len)


#: --length-mix name -> (rng, n, seq_len) -> document lengths (the module docstring says what each is)
LENGTH_MIXES = {"lognormal": _lognormal_lengths, "normal": _normal_lengths}


def special_ids(cfg) -> list[int]:
    return sorted({cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id, cfg.mask_token_id})


def write_synthetic_mds(folder: Path, cfg, seq_len: int, tokens: int, mix: str, seed: int = 0) -> dict:
    """Write [CLS] body [SEP] documents (random non-special ids) until `tokens` tokens; returns a summary."""
    from streaming import MDSWriter

    rng = np.random.default_rng(seed)
    specials = np.array(special_ids(cfg))
    filler = next(i for i in range(5, cfg.vocab_size) if i not in set(specials.tolist()))
    lengths: list[int] = []
    with MDSWriter(out=str(folder), columns={"input_ids": "ndarray:uint16"}, size_limit=1 << 26) as writer:
        while sum(lengths) < tokens:
            for n in LENGTH_MIXES[mix](rng, 256, seq_len).astype(int).tolist():
                body = rng.integers(5, cfg.vocab_size, max(n - 2, 1))
                body[np.isin(body, specials)] = filler
                doc = np.concatenate([[cfg.cls_token_id], body, [cfg.sep_token_id]]).astype(np.uint16)
                writer.write({"input_ids": doc})
                lengths.append(len(doc))
    arr = np.array(lengths)
    return dict(docs=len(arr), tokens=int(arr.sum()), median=float(np.median(arr)), mean=float(arr.mean()),
                over_seq_len=float((arr > seq_len).mean()))


def mds_source(args, cfg, seq_len: int, tokens: int, tmp: str) -> tuple[str, str]:
    """(MDS folder, description): --mds, or a synthetic folder written under `tmp`."""
    if args.mds:
        return args.mds, f"MDS {args.mds}"
    if cfg.vocab_size > 65536:
        raise SystemExit("synthetic MDS documents are uint16: vocab_size must be <= 65536 (pass --mds)")
    folder = Path(tmp) / f"mds-{seq_len}"
    info = write_synthetic_mds(folder, cfg, seq_len, tokens, args.length_mix)
    return str(folder), (f"synthetic MDS ({args.length_mix} lengths: {info['docs']} docs, median {info['median']:.0f}, "
                         f"mean {info['mean']:.0f}, {100 * info['over_seq_len']:.1f}% longer than {seq_len})")


def packer_batches(folder: str, cfg, seq_len: int, rows: int, mlm: float, n: int, pad_to_budget: bool,
                   workers: int) -> tuple[list[dict], float]:
    """`n` batches from build_train_loader over `folder`; returns them and the loader's seconds per batch."""
    from flexbert.config.data import DataConfig
    from flexbert.data.loader import build_train_loader
    from flexbert.data.streaming import RankInfo

    dcfg = DataConfig(local=folder, max_seq_len=seq_len, mlm_probability=mlm, pad_to_budget=pad_to_budget,
                      num_workers=workers)
    loader = build_train_loader(dcfg, device_batch_rows=rows, special_ids=special_ids(cfg),
                                mask_token_id=cfg.mask_token_id, vocab_size=cfg.vocab_size,
                                pad_token_id=cfg.pad_token_id, rank_info=RankInfo())
    it = iter(loader)
    batches = [next(it)]  # the first fills the packer's buffer: not timed
    t0 = time.perf_counter()
    for _ in range(n - 1):
        batches.append(next(it))
    per_batch = (time.perf_counter() - t0) / max(n - 1, 1)
    it.close()
    return batches, per_batch


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
    source, loader_s = "synthetic packed rows", None
    if args.data == "packer":
        with tempfile.TemporaryDirectory() as tmp:
            folder, source = mds_source(args, cfg, seq_len, int(1.3 * n_steps * args.rows * seq_len) + 64 * seq_len, tmp)
            batches, loader_s = packer_batches(folder, cfg, seq_len, args.rows, setup.mlm_probability, n_steps,
                                               args.pad_to_budget, args.workers)
    else:
        batches = [make_batch(seq_len, args.rows, cfg, setup.mlm_probability, seed=1000 + i,
                              pad_to_budget=args.pad_to_budget) for i in range(n_steps)]
    real = [b["num_tokens"] for b in batches]
    fills = [b["num_tokens"] / (args.rows * seq_len) for b in batches]
    on_device = [_to(b, device) for b in batches]

    def step(batch):
        with autocast:
            out = step_model(**batch)
        out.loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

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
    result = dict(data=args.data, seq_len=seq_len, rows=args.rows, tokens_per_step=statistics.mean(timed_real),
                  fill=statistics.mean(timed_real) / budget, fill_min=min(fills), loader_s_per_batch=loader_s,
                  mlm_loss=model.mlm_loss_kernel(device, dtype).name, step_s=statistics.median(times), tokens_per_s=tps,
                  flops_per_token=fpt, mfu=mfu, peak_flops=peak, peak_mem_bytes=peak_mem,
                  losses=losses, kernel=kernel, paper_ratio=tps / PAPER_TOKENS_PER_S if cuda else None)

    print(f"== seq_len {seq_len}: {args.rows} rows/step, {result['tokens_per_step']:.0f} real tokens/step "
          f"({100 * result['fill']:.1f}% of {budget}{', rows padded to seq_len' if args.pad_to_budget else ''}), "
          f"{args.warmup} warm-up + {args.steps} timed steps; attention kernel {kernel}, mlm loss {result['mlm_loss']}",
          flush=True)
    print(f"  batches             {source}")
    if args.data == "packer":
        print(f"  fill                {100 * result['fill']:.2f}% mean, {100 * result['fill_min']:.2f}% lowest batch "
              f"(real tokens / rows x seq_len); loader {loader_s * 1e3:.1f} ms/batch ({args.workers} workers)")
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


# ---------------------------------------------------------------------------------------------
# --trainer: the Composer Trainer that train.py builds
# ---------------------------------------------------------------------------------------------
PHASES = ("data", "forward", "backward", "optimizer")


def _status_bytes(field: str) -> int | None:
    """VmRSS / VmHWM of this process from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        return True
    except OSError:
        return False


def make_step_timer(warmup: int, cuda: bool):
    """A Composer callback timing each step and its phases (see the module docstring)."""
    from composer.core import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.steps: list[dict] = []  # one per step: boundary marks and batch sizes
            self.current: dict | None = None
            self.peak_mem: int | None = None

        def _mark(self):
            if cuda:
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                return ev
            return time.perf_counter()

        def _add(self, phase: str, start_key: str) -> None:
            self.current.setdefault(phase, []).append((self.current.pop(start_key), self._mark()))

        def before_dataloader(self, state, logger):
            self.current = {"data_start": self._mark()}

        def after_dataloader(self, state, logger):
            self._add("data", "data_start")
            batch = state.batch
            self.current["tokens"] = int(batch["num_tokens"])
            self.current["rows"] = len(batch["row_offsets"]) - 1
            self.current["masked"] = int((batch["labels"] != -100).sum())

        def before_forward(self, state, logger):
            self.current["fwd_start"] = self._mark()

        def after_forward(self, state, logger):
            self._add("forward", "fwd_start")

        def before_loss(self, state, logger):
            self.current["loss_start"] = self._mark()

        def after_loss(self, state, logger):
            self._add("forward", "loss_start")  # the loss is part of the forward pass

        def before_backward(self, state, logger):
            self.current["bwd_start"] = self._mark()

        def after_backward(self, state, logger):
            self._add("backward", "bwd_start")

        def optimizer_pre(self, optimizer, args, kwargs):
            # Composer passes the microbatches' forward + backward as the step's closure: the update
            # itself starts when the closure returns.
            self.current["opt_start"] = self._mark()
            closure = kwargs.get("closure", args[0] if args else None)
            if closure is None:
                return None

            def timed_closure(*a, **kw):
                out = closure(*a, **kw)
                self.current["opt_start"] = self._mark()
                return out

            if "closure" in kwargs:
                return args, dict(kwargs, closure=timed_closure)
            return (timed_closure,) + tuple(args[1:]), kwargs

        def optimizer_post(self, optimizer, args, kwargs):
            self._add("optimizer", "opt_start")

        def batch_end(self, state, logger):
            self.current["end"] = self._mark()
            loss = state.loss
            self.current["loss"] = float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan")
            self.steps.append(self.current)
            if len(self.steps) == warmup:  # peak memory counts the timed steps only
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                else:
                    self.cpu_peak_reset = _reset_peak_rss()

        def fit_end(self, state, logger):
            if cuda:
                torch.cuda.synchronize()
                self.peak_mem = torch.cuda.max_memory_allocated()
            else:
                self.peak_mem = _status_bytes("VmHWM") if getattr(self, "cpu_peak_reset", False) else None

        def seconds(self) -> list[dict]:
            """Per timed step: step seconds (BATCH_END to BATCH_END) and seconds per phase."""
            def dt(a, b) -> float:
                return a.elapsed_time(b) / 1e3 if cuda else b - a

            out = []
            for prev, step in zip(self.steps[warmup - 1:], self.steps[warmup:]):
                row = {"step": dt(prev["end"], step["end"]), "tokens": step["tokens"], "rows": step["rows"],
                       "masked": step["masked"], "loss": step["loss"]}
                for phase in PHASES:
                    row[phase] = sum(dt(a, b) for a, b in step.get(phase, []))
                row["other"] = row["step"] - sum(row[p] for p in PHASES)
                out.append(row)
            return out

    return StepTimer()


def trainer_overrides(args, seq_len: int, rows: int, folder: str, cuda: bool) -> list[str]:
    """What the bench sets on the run: size and length of the step, the data, nothing written or loaded."""
    out = [f"max_duration={args.warmup + args.steps}ba", f"global_train_batch_size={rows}",
           f"device_train_microbatch_size={rows}", "batch_size_warmup.min_batch_size=0", "batch_size_warmup.tokens=0tok",
           "data.streams=[]", f"data.local={folder}", "data.split=null", "data.eval_split=null", "eval_data=null",
           f"data.max_seq_len={seq_len}", "tokenizer=null", "save_folder=null", "autoresume=false", "load_path=null",
           "init_from=null", "export_hf=null", "loggers.wandb=null", "loggers.jsonl=null", "log_to_console=false",
           "progress_bar=false", f"device={'gpu' if cuda else 'cpu'}"]
    if args.dtype:
        out.append(f"precision={'amp_bf16' if args.dtype == 'bf16' else 'fp32'}")
    elif not cuda:
        out.append("precision=fp32")
    if args.compile:
        out.append("compile=true")
    if args.pad_to_budget:
        out.append("data.pad_to_budget=true")
    if args.workers is not None:
        out.append(f"data.num_workers={args.workers}")
    if args.attn_backend:
        out.append(f"model.attn_backend={args.attn_backend}")
    if args.mlm_loss:
        out.append(f"model.mlm_loss={args.mlm_loss}")
    return out


def measure_trainer(seq_len: int, args, device: torch.device) -> dict:
    """--trainer: fit the run YAML for warmup + steps batches and time every step."""
    from flexbert.train.builder import build_trainer

    cuda = device.type == "cuda"
    base = load_run(args.model, args.overrides)
    cfg0, mcfg0 = base.cfg, base.model_cfg
    rows = args.rows or (cfg0.device_train_microbatch_size if cuda and isinstance(cfg0.device_train_microbatch_size, int)
                         else 2)
    if seq_len > mcfg0.max_position_embeddings:
        raise SystemExit(f"--seq-len {seq_len} is longer than the run's model.max_position_embeddings "
                         f"({mcfg0.max_position_embeddings}); use a config made for it (e.g. a context-extension YAML)")
    with tempfile.TemporaryDirectory() as tmp:
        tokens = int(1.3 * (args.warmup + args.steps + 2) * rows * seq_len) + 64 * seq_len
        folder, source = mds_source(args, mcfg0, seq_len, tokens, tmp)
        forced = trainer_overrides(args, seq_len, rows, folder, cuda)
        loaded = load_run(args.model, forced + list(args.overrides))
        cfg, mcfg = loaded.cfg, loaded.model_cfg
        built = build_trainer(loaded)
        trainer = built.trainer
        timer = make_step_timer(args.warmup, cuda)
        trainer.state.callbacks.append(timer)
        handles = []
        for opt in trainer.state.optimizers:
            handles.append(opt.register_step_pre_hook(timer.optimizer_pre))
            handles.append(opt.register_step_post_hook(timer.optimizer_post))
        t0 = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - t0
        for h in handles:
            h.remove()
        model = built.composer_model.model
        dtype = {"fp32": torch.float32, "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}[cfg.precision]
        kernel = model.model.attention_kernel(device, dtype).name
        mlm_loss = model.mlm_loss_kernel(device, dtype).name
        trainer.close()
    steps = timer.seconds()
    if not steps:
        raise SystemExit("no timed steps: raise --steps")
    tps = statistics.median(s["tokens"] / s["step"] for s in steps)
    total = sum(s["step"] for s in steps)
    shares = {p: sum(s[p] for s in steps) / total for p in PHASES + ("other",)}
    fpt = flops_per_token(mcfg, seq_len, cfg.data.mlm_probability)
    precision = precision_key(cfg.precision)
    peak = peak_flops(torch.cuda.get_device_name(device), precision) if cuda else None
    mfu = tps * fpt / peak if peak else None
    tokens = [s["tokens"] for s in steps]
    result = dict(mode="trainer", run=args.model, seq_len=seq_len, rows=rows, steps=len(steps),
                  tokens_per_step=statistics.mean(tokens), fill=statistics.mean(tokens) / (rows * seq_len),
                  fill_min=min(tokens) / (rows * seq_len), masked_per_step=statistics.mean(s["masked"] for s in steps),
                  step_s=statistics.median(s["step"] for s in steps), tokens_per_s=tps, flops_per_token=fpt, mfu=mfu,
                  peak_flops=peak, peak_mem_bytes=timer.peak_mem, shares=shares,
                  outside_share=shares["data"] + shares["other"], kernel=kernel, mlm_loss=mlm_loss,
                  precision=cfg.precision, losses=[s["loss"] for s in timer.steps], wall_s=wall, overrides=forced)
    print(f"== Composer Trainer (build_trainer) on {args.model}: {rows} rows x {seq_len} tokens per step (one "
          f"microbatch), {args.warmup} warm-up + {len(steps)} timed steps; {cfg.precision}; attention kernel {kernel}, "
          f"mlm loss {mlm_loss}{'; compile' if cfg.compile else ''}", flush=True)
    print(f"  bench overrides     {' '.join(forced)}")
    if args.overrides:
        print(f"  your overrides      {' '.join(args.overrides)}")
    print(f"  batches             real loader over {source}")
    print(f"  fill                {100 * result['fill']:.2f}% mean, {100 * result['fill_min']:.2f}% lowest step "
          f"({result['tokens_per_step']:.0f} real tokens, {result['masked_per_step']:.0f} masked per step)")
    all_ms = ", ".join(f"{s['step'] * 1e3:.0f}" for s in steps)
    print(f"  step time (median)  {result['step_s'] * 1e3:.1f} ms   (all: {all_ms} ms)")
    print(f"  tokens/s (real)     {tps:,.0f}")
    print(f"  FLOPs/token         {fpt:,.0f} (flexbert.train.flops.flops_per_token at seq_len {seq_len})")
    if mfu is not None:
        print(f"  MFU                 {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s ({precision} dense peak)")
    else:
        print(f"  MFU                 n/a ({'no known peak for this CUDA device' if cuda else 'CPU: no peak'})")
    if timer.peak_mem is not None:
        what = "CUDA max_memory_allocated" if cuda else "process peak resident size (VmHWM) over the timed steps"
        print(f"  peak memory         {timer.peak_mem / 2**30:.2f} GiB ({what})")
    else:
        print("  peak memory         n/a (no /proc/self/clear_refs)")
    print("  step time split     " + " | ".join(f"{p} {100 * shares[p]:.1f}%" for p in PHASES + ("other",))
          + ("  (GPU timeline, CUDA events)" if cuda else ""))
    print(f"  outside fwd/bwd/opt {100 * result['outside_share']:.1f}% of step time (data loading + other)")
    print(f"  loss                {result['losses'][0]:.3f} (first) -> {result['losses'][-1]:.3f} (last)")
    return result


def main(argv=None) -> list[dict]:
    """Parse arguments, run every --seq-len, print the numbers; returns one result dict per seq_len."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="modernbert-base", help="preset name (yamls/models), run YAML or model YAML")
    p.add_argument("--seq-len", type=int, nargs="+",
                   help="row length(s), e.g. 1024 8192 (default 1024; trainer: the run's data.max_seq_len)")
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
    p.add_argument("--mlm-loss", help="MLM loss kernel (model.mlm_loss: auto, chunked, dense)")
    p.add_argument("--data", choices=["synthetic", "packer"], default="synthetic",
                   help="plain loop: synthetic packed rows, or batches from the real loader over MDS (see above)")
    p.add_argument("--mds", help="packer / trainer: an MDS dataset folder to read (default: synthetic documents)")
    p.add_argument("--length-mix", choices=sorted(LENGTH_MIXES), default="lognormal",
                   help="document lengths of the synthetic MDS folder (default lognormal)")
    p.add_argument("--workers", type=int, help="loader worker processes (packer: default 0; trainer: the run's)")
    p.add_argument("--trainer", action="store_true", help="time the Composer Trainer built from the run YAML --model")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="trainer: a run config override (repeatable), as on train.py's command line")
    p.add_argument("--json", help="also append one JSON line per seq_len to this file")
    args = p.parse_args(argv)
    if args.trainer and not args.model.endswith((".yaml", ".yml")):
        p.error("--trainer needs a run YAML as --model (e.g. yamls/modernbert-base/1-pretrain.yaml)")
    if args.data == "packer" and args.trainer:
        p.error("--trainer always reads batches from the real loader; drop --data packer")
    if args.workers is None and not args.trainer:
        args.workers = 0
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if cuda else "fp32")]
    args.warmup = args.warmup if args.warmup is not None else ((5 if cuda else 1) + (5 if args.compile else 0))
    args.steps = args.steps or (20 if cuda else 3)
    if args.trainer:
        args.warmup = max(args.warmup, 1)  # the first timed step starts at the last warm-up step's end
        return _main_trainer(args, device)
    args.seq_len = args.seq_len or [1024]
    setup = load_setup(args.model)
    if args.attn_backend:
        setup.model_cfg = dataclasses.replace(setup.model_cfg, attn_backend=args.attn_backend)
    if args.mlm_loss:
        setup.model_cfg = dataclasses.replace(setup.model_cfg, mlm_loss=args.mlm_loss)
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


def _main_trainer(args, device: torch.device) -> list[dict]:
    cuda = device.type == "cuda"
    where = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"Composer Trainer throughput: run {args.model}; device {device} ({where}); torch {torch.__version__}; "
          f"load avg (1 min) {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    if not args.seq_len:
    
        args.seq_len = [load_run(args.model, args.overrides).cfg.data.max_seq_len]
    for seq_len in args.seq_len:
        result = measure_trainer(seq_len, args, device)
        results.append(result)
        if args.json:
            record = dict(result, device=where, torch=torch.__version__)
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
