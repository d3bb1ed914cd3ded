"""Model throughput: FlexBERT (packed, sparse MLM head) vs transformers' ModernBertForMaskedLM (padded).

Both models hold the same weights (FlexBERT is exported with flexbert.export.save_hf and HF
loads that folder) and see the same documents, token ids and labels:
  - FlexBERT gets the documents packed back to back (T,) with cu_seqlens, and in fwd+bwd
    the sparse MLM head on the labelled (30% masked) tokens;
  - HF gets them right-padded (B, S) with attention_mask and the same labels (-100 at pads),
    with its own sparse_prediction switched on in fwd+bwd, so both skip unlabelled rows in
    the decoder; forward-only runs return full logits on both sides.
Tokens/s counts real (non-pad) tokens only. Each measurement: warm-up, then --repeats rounds,
each timing one FlexBERT call and one HF call back to back (alternating which goes first; CUDA
events on GPU, perf_counter on CPU); tokens/s is from each side's median time and the ratio is the
median of the per-round ratios, so load changes on a shared machine hit both sides of a ratio.
Peak memory is taken in one further call per side. Dropout is 0 on both sides. On a shared CPU,
`--threads 1 --timer process` counts each call's CPU time instead of wall time: other jobs on
the cores then barely move the result (cache and memory bandwidth are still shared).

Document lengths: short ~ Normal(256, 64) clipped to [32, 512]; long ~ Normal(4096, 1024)
clipped to [512, 8192]. Defaults are sized for the device: on CPU `--set short` with 8
documents and 3 repeats finishes in a few minutes on 2 cores (long documents take ~10x
longer per token on CPU; run `--set long` explicitly). On CUDA `--set both`, 64 short or 8
long documents per batch, 10 repeats.

MFU (CUDA only) = tokens/s x FLOPs/token / peak, with peak bf16 dense 989 TFLOP/s (H100 SXM):
  FLOPs/token (fwd+bwd) = 6 x N + sum over layers of 12 x d x context
                          + 6 x (d^2 + d x V) x (masked tokens / tokens)
  N = non-embedding encoder parameters (all layers + final norm; no token embedding, no head,
  no decoder); context = the document length for global layers and min(local_attention,
  length) for local layers, averaged over tokens; the head (dense + decoder) runs on masked
  tokens only. Forward only: 2 x N + 4 x d x context per layer + 2 x (d^2 + d x V) (all tokens).

Usage: python bench/model_throughput.py [--model modernbert-base|YAML] [--device cpu|cuda]
       [--dtype fp32|bf16] [--set short|long|both] [--batch-docs N] [--repeats N]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from flexbert.config.model import load_model_config  # noqa: E402
from flexbert.export import save_hf  # noqa: E402
from flexbert.model import FlexBertForMaskedLM  # noqa: E402

SETS = {"short": (256, 64, 32, 512), "long": (4096, 1024, 512, 8192)}
H100_BF16_PEAK = 989e12
MASK_RATE = 0.3
DEFAULT_DOCS = {"cpu": {"short": 8, "long": 2}, "cuda": {"short": 64, "long": 8}}


def doc_lengths(which: str, n: int, seed: int, max_len: int) -> list[int]:
    mean, std, lo, hi = SETS[which]
    g = torch.Generator().manual_seed(seed)
    lens = (torch.randn(n, generator=g) * std + mean).round().clamp(lo, min(hi, max_len))
    return [int(x) for x in lens]


def make_batches(lengths: list[int], cfg, seed: int, device: torch.device):
    """The same documents and labels, packed for FlexBERT and padded for HF."""
    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(5, cfg.vocab_size, (n,), generator=g) for n in lengths]
    labels = []
    for d in docs:
        lab = torch.full_like(d, -100)
        pick = torch.rand(len(d), generator=g) < MASK_RATE
        lab[pick] = d[pick]
        labels.append(lab)
    cu = torch.zeros(len(docs) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    packed = dict(input_ids=torch.cat(docs).to(device), labels=torch.cat(labels).to(device),
                  cu_seqlens=cu.to(device), max_seqlen=max(lengths))
    S, B = max(lengths), len(docs)
    ids = torch.full((B, S), cfg.pad_token_id, dtype=torch.long)
    lab = torch.full((B, S), -100, dtype=torch.long)
    mask = torch.zeros((B, S), dtype=torch.long)
    for b, (d, l) in enumerate(zip(docs, labels)):
        ids[b, :len(d)], lab[b, :len(d)], mask[b, :len(d)] = d, l, 1
    padded = dict(input_ids=ids.to(device), attention_mask=mask.to(device), labels=lab.to(device))
    return packed, padded


class PeakMemory:
    """Peak memory of one phase: CUDA max_memory_allocated, or sampled process RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()

            def sample():
                while not self._stop.is_set():
                    self.peak = max(self.peak, proc.memory_info().rss)
                    time.sleep(0.005)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def time_once(fn, device: torch.device, timer: str = "wall") -> float:
    """Seconds of one call: CUDA events on GPU; on CPU perf_counter (wall) or process CPU time."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    clock = time.process_time if timer == "process" else time.perf_counter
    t0 = clock()
    fn()
    return clock() - t0


def flops_per_token(model, cfg, lengths: list[int], n_masked: int, backward: bool) -> float:
    """The formula in the module docstring."""
    d, V, T = cfg.hidden_size, cfg.vocab_size, sum(lengths)
    n = sum(p.numel() for name, p in model.named_parameters()
            if name.startswith("model.") and not name.startswith("model.embeddings."))
    attn = 0.0
    for spec in cfg.layer_types():
        ctx = sum(L * (L if spec.kind == "global" else min(cfg.local_attention, L)) for L in lengths) / T
        attn += (12 if backward else 4) * d * ctx
    head = d * d + d * V
    if backward:
        return 6 * n + attn + 6 * head * n_masked / T
    return 2 * n + attn + 2 * head


def measure(which, cfg, flex, hf, args, device) -> list[str]:
    n_docs = args.batch_docs or DEFAULT_DOCS["cuda" if device.type == "cuda" else "cpu"][which]
    lengths = doc_lengths(which, n_docs, seed=0, max_len=cfg.max_position_embeddings)
    packed, padded = make_batches(lengths, cfg, seed=1, device=device)
    T, n_masked = sum(lengths), int((packed["labels"] != -100).sum())
    S = max(lengths)
    rows = [f"== {which}: {n_docs} docs, {T} real tokens, padded {n_docs}x{S} = {n_docs * S} "
            f"({100 * (1 - T / (n_docs * S)):.0f}% padding), {n_masked} masked"]
    print(rows[0], flush=True)

    def flex_fwd():
        with torch.no_grad():
            flex(packed["input_ids"], cu_seqlens=packed["cu_seqlens"], max_seqlen=packed["max_seqlen"])

    def hf_fwd():
        with torch.no_grad():
            hf(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"])

    def flex_train():
        out = flex(packed["input_ids"], labels=packed["labels"], cu_seqlens=packed["cu_seqlens"],
                   max_seqlen=packed["max_seqlen"])
        out.loss.backward()

    def hf_train():
        out = hf(**padded)
        out.loss.backward()

    for phase, (f_fn, h_fn) in {"fwd": (flex_fwd, hf_fwd), "fwd+bwd": (flex_train, hf_train)}.items():
        fns = {"flexbert": (f_fn, flex), "hf": (h_fn, hf)}
        for fn, model in fns.values():
            model.train(phase == "fwd+bwd")
            for _ in range(args.warmup):
                fn()
            model.zero_grad(set_to_none=True)
        # Interleaved: each repeat times both models back to back (the order alternates), so a load
        # change on a shared machine hits both; the ratio is the median of the per-repeat ratios.
        times = {name: [] for name in fns}
        for r in range(args.repeats):
            for name in (("flexbert", "hf") if r % 2 == 0 else ("hf", "flexbert")):
                fn, model = fns[name]
                times[name].append(time_once(fn, device, args.timer))
                model.zero_grad(set_to_none=True)
        peak = {}
        for name, (fn, model) in fns.items():  # peak memory: one more call each, on its own
            with PeakMemory(device) as mem:
                fn()
            model.zero_grad(set_to_none=True)
            peak[name] = mem.peak
        f_tps, h_tps = T / statistics.median(times["flexbert"]), T / statistics.median(times["hf"])
        ratio = statistics.median(h / f for f, h in zip(times["flexbert"], times["hf"]))
        line = (f"{phase:8s} flexbert {f_tps:10.0f} tok/s  hf {h_tps:10.0f} tok/s  ratio {ratio:5.2f}x  "
                f"peak mem flexbert {peak['flexbert'] / 2**30:.2f} GiB hf {peak['hf'] / 2**30:.2f} GiB")
        if device.type == "cuda":
            fpt = flops_per_token(flex, cfg, lengths, n_masked, backward=phase == "fwd+bwd")
            line += f"  MFU flexbert {100 * f_tps * fpt / H100_BF16_PEAK:.1f}% hf {100 * h_tps * fpt / H100_BF16_PEAK:.1f}%"
        if args.repeats > 1:
            pair = sorted(h / f for f, h in zip(times["flexbert"], times["hf"]))
            line += f"  (per-repeat ratios {pair[0]:.2f}-{pair[-1]:.2f})"
        rows.append(line)
        print(line, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="modernbert-base", help="preset name (yamls/models) or YAML path")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--set", dest="which", choices=["short", "long", "both"], help="default: both on CUDA, short on CPU")
    p.add_argument("--batch-docs", type=int, help="documents per batch (default: CPU 8 short / 2 long; CUDA 64 / 8)")
    p.add_argument("--repeats", type=int, help="timed repeats, median reported (default: CPU 3, CUDA 10)")
    p.add_argument("--warmup", type=int, help="untimed warm-up runs (default: CPU 1, CUDA 3)")
    p.add_argument("--hf-attn", default=None, help="HF attn_implementation (default: HF's own choice)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timer", choices=["wall", "process"], default="wall",
                   help="CPU: wall clock (default) or this process's CPU time (with --threads 1: the work done, "
                        "insensitive to other jobs taking the cores; tokens/s is then per CPU-second)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if cuda else "fp32")]
    args.which = args.which or ("both" if cuda else "short")
    args.repeats = args.repeats or (10 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)

    import transformers
    from transformers import AutoModelForMaskedLM

    src = {"preset": args.model} if not args.model.endswith((".yaml", ".yml")) else args.model
    cfg = load_model_config(src)
    zero = {k: 0.0 for k in ("embedding_dropout", "attention_dropout", "attn_out_dropout", "mlp_dropout")}
    cfg = dataclasses.replace(cfg, **zero)
    torch.manual_seed(0)
    flex = FlexBertForMaskedLM(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(flex, Path(tmp) / "hf")
        hf = AutoModelForMaskedLM.from_pretrained(str(Path(tmp) / "hf"), attn_implementation=args.hf_attn,
                                                  dtype=dtype)
    hf.sparse_prediction = True  # HF's own sparse head for fwd+bwd (reads this attribute in forward)
    flex = flex.to(device=device, dtype=dtype)
    hf = hf.to(device)
    print(f"model {args.model}: {sum(p.numel() for p in flex.parameters()):,} params; device {device} "
          f"({torch.cuda.get_device_name(device) if cuda else f'{torch.get_num_threads()} threads'}); {dtype}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}; HF attention "
          f"{hf.config._attn_implementation}; repeats {args.repeats} (median), warm-up {args.warmup}; "
          f"{'timer ' + args.timer + '; ' if not cuda else ''}"
          f"load avg (1 min) {os.getloadavg()[0]:.1f}")
    mlm_loss = flex.mlm_loss_kernel(device, dtype).name if hasattr(flex, "mlm_loss_kernel") else "dense"
    print(f"flexbert: attention kernel {flex.model.attention_kernel(device, dtype).name}, mlm loss (fwd+bwd) {mlm_loss}")
    for which in (["short", "long"] if args.which == "both" else [args.which]):
        measure(which, cfg, flex, hf, args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
