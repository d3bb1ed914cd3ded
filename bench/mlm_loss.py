"""MLM loss kernels: `dense` (full logits + F.cross_entropy, the reference) vs `chunked`.

What is timed: one forward + backward of the decoder projection and the mean cross-entropy over M
scored rows, h (M, D) -> logits (M, V) -> loss, with gradients to h, the decoder weight (V, D) and
bias (V,), exactly as `FlexBertForMaskedLM` runs it with the sparse head (flexbert/model/mlm_loss.py).
Inputs: h ~ N(0, 1), W ~ N(0, 0.02) (ModernBERT's embedding init), b = 0, labels uniform over V,
every row labelled (the sparse head scores only labelled rows). `--dtype bf16` runs under
torch.autocast (fp32 weights, bf16 matmuls), as training with amp_bf16 does.

Time: the two kernels alternate (dense, chunked, dense, ...) after one warm-up each, and the
median of `--repeats` is reported per kernel, so load changes on a shared machine hit both alike;
CUDA: CUDA events; CPU: wall clock, or with `--timer process` this process's CPU time (use with
`--threads 1`). The ratio chunked / dense is the result (below 1 = chunked faster).

Memory: the peak memory a kernel adds on top of its inputs (h, W, b, labels) during forward +
backward, gradients included. CUDA: max_memory_allocated minus the allocated bytes before.
CPU: each kernel runs once in a fresh child process (this script with --child), which resets the
kernel's peak resident set size (Linux: `5` into /proc/self/clear_refs) after building the inputs
and reports VmHWM (peak resident) minus VmRSS just before the forward.

Also printed: the loss difference and the largest gradient difference between the kernels
(a check that both compute the same thing at this size; tests/test_mlm_loss.py is the test).

Usage: python bench/mlm_loss.py [--masked-tokens 4096 8192] [--vocab 50368] [--hidden 768]
       [--dtype fp32|bf16] [--device cpu|cuda] [--repeats 5] [--chunk-rows N]
Defaults: ModernBERT-base's V 50368 and D 768; M 4096 on CPU (30% of ~13.7k real tokens, e.g. 16
rows of 1024 at 83% fill), 4096 and 17408 on CUDA (17408 ~ 30% of 64 rows of 1024 at ~87% fill,
the H200 runs' microbatch).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from flexbert.model.mlm_loss import ChunkedMLMLoss, DenseMLMLoss, default_chunk_rows  # noqa: E402

KERNELS = ("dense", "chunked")


def make_inputs(M: int, D: int, V: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(M, D, generator=g).to(device).requires_grad_()
    decoder = torch.nn.Linear(D, V, bias=True)
    with torch.no_grad():
        decoder.weight.copy_(torch.randn(V, D, generator=g) * 0.02)
        decoder.bias.zero_()
    decoder = decoder.to(device)
    labels = torch.randint(0, V, (M,), generator=g).to(device)
    return h, decoder, labels


def make_kernel(name: str, chunk_rows: int | None):
    return DenseMLMLoss() if name == "dense" else ChunkedMLMLoss(chunk_rows)


def step(kernel, h, decoder, labels, dtype) -> torch.Tensor:
    """One forward + backward; leaves the gradients in h.grad / decoder.*.grad."""
    h.grad = None
    decoder.zero_grad(set_to_none=True)
    with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = kernel(h, decoder, labels).loss
    loss.backward()
    return loss.detach()


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now, VmHWM: peak resident since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args) -> None:
    """--child: run one kernel once; print the peak resident bytes it added over the inputs."""
    device = torch.device("cpu")
    h, decoder, labels = make_inputs(args.masked_tokens[0], args.hidden, args.vocab, device)
    kernel = make_kernel(args.child, args.chunk_rows)
    # Reset the peak (VmHWM) to the current resident size, so that building the inputs does not count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    step(kernel, h, decoder, labels, args.dtype)
    print(json.dumps({"extra_bytes": _status_bytes("VmHWM") - before}))


def peak_extra_memory(name: str, M: int, args, device: torch.device) -> int:
    if device.type == "cuda":
        h, decoder, labels = make_inputs(M, args.hidden, args.vocab, device)
        kernel = make_kernel(name, args.chunk_rows)
        step(kernel, h, decoder, labels, args.dtype)  # warm-up (cuBLAS workspaces etc.)
        h.grad = None
        decoder.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(kernel, h, decoder, labels, args.dtype)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        del h, decoder, labels
        torch.cuda.empty_cache()
        return extra
    cmd = [sys.executable, __file__, "--child", name, "--masked-tokens", str(M), "--vocab", str(args.vocab),
           "--hidden", str(args.hidden), "--dtype", args.dtype]
    if args.chunk_rows:
        cmd += ["--chunk-rows", str(args.chunk_rows)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["extra_bytes"])


def measure(M: int, args, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    h, decoder, labels = make_inputs(M, args.hidden, args.vocab, device)
    kernels = {name: make_kernel(name, args.chunk_rows) for name in KERNELS}
    # Same numbers? (the loss and every gradient, dense vs chunked)
    grads, losses = {}, {}
    for name, kernel in kernels.items():
        losses[name] = float(step(kernel, h, decoder, labels, args.dtype))  # also the warm-up
        grads[name] = [t.grad.detach().clone() for t in (h, decoder.weight, decoder.bias)]
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(grads["dense"], grads["chunked"]))
    grad_scale = max(float(a.abs().max()) for a in grads["dense"])
    del grads
    times: dict[str, list[float]] = {name: [] for name in KERNELS}
    for _ in range(args.repeats):
        for name, kernel in kernels.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step(kernel, h, decoder, labels, args.dtype)
                end.record()
                torch.cuda.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
            else:
                clock = time.process_time if args.timer == "process" else time.perf_counter
                t0 = clock()
                step(kernel, h, decoder, labels, args.dtype)
                times[name].append(clock() - t0)
    del h, decoder, labels
    mem = {name: peak_extra_memory(name, M, args, device) for name in KERNELS}
    med = {name: statistics.median(times[name]) for name in KERNELS}
    return dict(masked_tokens=M, vocab=args.vocab, hidden=args.hidden, dtype=args.dtype, device=str(device),
                seconds=med, all_seconds=times, peak_extra_bytes=mem, loss=losses, max_grad_diff=grad_diff,
                max_grad=grad_scale, time_ratio=med["chunked"] / med["dense"],
                memory_ratio=mem["chunked"] / max(mem["dense"], 1),
                chunk_rows=kernels["chunked"].chunk_rows or default_chunk_rows(args.vocab))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--masked-tokens", type=int, nargs="+", help="scored rows M (default: CPU 4096; CUDA 4096 17408)")
    p.add_argument("--vocab", type=int, default=50368)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="default: fp32 on CPU, bf16 (autocast) on CUDA")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, help="timed repeats per kernel, median (default: CPU 5, CUDA 20)")
    p.add_argument("--chunk-rows", type=int, help="rows per chunk of the chunked kernel (default: its own)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timer", choices=["wall", "process"], default="wall",
                   help="CPU: wall clock (default) or this process's CPU time (with --threads 1: insensitive to "
                        "other jobs on the cores)")
    p.add_argument("--json", help="also append one JSON line per M to this file")
    p.add_argument("--child", choices=KERNELS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.masked_tokens = args.masked_tokens or ([4096, 17408] if cuda else [4096])
    args.repeats = args.repeats or (20 if cuda else 5)
    if args.child:
        child(args)
        return []
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(f"MLM loss, dense vs chunked: V {args.vocab}, D {args.hidden}, {args.dtype}"
          f"{' autocast' if args.dtype == 'bf16' else ''}; device {device} ({where}); torch {torch.__version__}; "
          f"{args.repeats} timed repeats each, alternating{'' if cuda else ', timer ' + args.timer}; "
          f"load avg (1 min) {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for M in args.masked_tokens:
        r = measure(M, args, device)
        results.append(r)
        gib = {k: v / 2**30 for k, v in r["peak_extra_bytes"].items()}
        print(f"== M {M} scored rows (dense logits: {M * args.vocab * 4 / 2**30:.2f} GiB per fp32 copy); "
              f"chunked: {r['chunk_rows']} rows per chunk", flush=True)
        for name in KERNELS:
            print(f"  {name:8s} fwd+bwd {r['seconds'][name] * 1e3:9.1f} ms   peak extra memory {gib[name]:7.3f} GiB   "
                  f"(all: {', '.join(f'{t * 1e3:.0f}' for t in r['all_seconds'][name])} ms)")
        print(f"  chunked / dense: time {r['time_ratio']:.2f}x, memory {r['memory_ratio']:.3f}x "
              f"({gib['dense'] / max(gib['chunked'], 1e-9):.1f}x less)")
        print(f"  same result: loss dense {r['loss']['dense']:.6f} chunked {r['loss']['chunked']:.6f}; "
              f"max |grad diff| {r['max_grad_diff']:.2e} (largest grad {r['max_grad']:.2e})", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(dict(r, torch=torch.__version__, where=where)) + "\n")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
