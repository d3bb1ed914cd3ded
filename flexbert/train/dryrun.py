"""`train.py RUN.yaml --dry-run`: what a run will do, without building data or a model.

Prints the resolved config (YAML), the parameter count and training FLOPs per token
(`flexbert.train.flops`), and a table of the schedules over the whole run at 11 evenly
spaced points in tokens: learning rate, global batch size (rows), sequence length,
masking rate and RoPE thetas. A named attention kernel that could not train on this
machine's device (e.g. `flex` on CPU) is reported as a warning line.

Steps and tokens are related by simulating the batch-size warmup step by step with the
loader's own rule (`flexbert.data.batch_size_warmup.BatchSizeWarmup`) and `rows x max_seq_len`
tokens per step, i.e. assuming full rows (packing loses < 0.5%), so the step column is an
estimate while the token column is exact for token-based schedules.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any

from flexbert.config.loading import LoadedRun
from flexbert.config.optim import parse_time
from flexbert.data.batch_size_warmup import BatchSizeWarmup
from flexbert.errors import ConfigError
from flexbert.model.registries import check_block_names
from flexbert.train.builder import check_attention_kernel
from flexbert.train.flops import count_params, flops_per_token
from flexbert.train.schedulers import lr_multiplier_at

__all__ = ["schedule_table", "dry_run_report", "simulate_steps"]

#: Safety bound on simulated warmup steps (the warmup is simulated step by step, the
#: constant-batch rest of the run in one jump).
_MAX_STEPS = 2_000_000


@dataclasses.dataclass
class Timeline:
    """Cumulative tokens / samples at the end of each simulated step (index = steps done)."""

    tokens: list[int]
    samples: list[int]
    #: > 0 when the last entry stands for this many equal full-size steps (after the warmup)
    tail_steps: int = 0


def _rows_at(cfg: Any, tokens_done: int) -> int:
    warm = cfg.batch_size_warmup
    rule = BatchSizeWarmup(
        max_rows=cfg.global_train_batch_size,
        min_rows=warm.min_batch_size or None,
        warmup_tokens=warm.num_tokens,
        world_size=1,
    )
    return rule.rows(tokens_done)


def simulate_steps(cfg: Any) -> Timeline:
    """Step-by-step tokens and samples until `cfg.max_duration` is reached."""
    amount, unit = parse_time(cfg.max_duration, "max_duration")
    seq = cfg.data.max_seq_len
    tokens, samples = [0], [0]
    while True:
        done = {"tok": tokens[-1], "sp": samples[-1], "ba": len(tokens) - 1}[unit]
        if done >= amount or len(tokens) > _MAX_STEPS:
            break
        rows = _rows_at(cfg, tokens[-1])
        if rows == cfg.global_train_batch_size:  # warmup over: jump straight to the end
            per_step = {"tok": rows * seq, "sp": rows, "ba": 1}[unit]
            remaining = -(-(amount - done) // per_step)
            tokens.append(tokens[-1] + remaining * rows * seq)
            samples.append(samples[-1] + remaining * rows)
            return Timeline(tokens, samples, tail_steps=remaining)
        tokens.append(tokens[-1] + rows * seq)
        samples.append(samples[-1] + rows)
    return Timeline(tokens, samples)


def _step_at_tokens(tl: Timeline, cfg: Any, t: int) -> float:
    """Steps done when `t` tokens have been trained (fractional inside the constant tail)."""
    tail = tl.tail_steps
    head_steps = len(tl.tokens) - 1 - (1 if tail else 0)
    if t <= tl.tokens[head_steps]:
        return float(bisect.bisect_left(tl.tokens, t, 0, head_steps + 1))
    per_step = cfg.global_train_batch_size * cfg.data.max_seq_len
    return head_steps + (t - tl.tokens[head_steps]) / per_step


def schedule_table(loaded: LoadedRun, points: int = 11) -> list[dict[str, Any]]:
    """Rows of the schedule table at `points` evenly spaced token counts over the run."""
    cfg, mcfg = loaded.cfg, loaded.model_cfg
    tl = simulate_steps(cfg)
    total_tokens = tl.tokens[-1]
    total_steps = _step_at_tokens(tl, cfg, total_tokens)
    total_samples = tl.samples[-1]
    rows = []
    for i in range(points):
        tok = round(total_tokens * i / (points - 1))
        step = _step_at_tokens(tl, cfg, tok)
        samples = round(total_samples * i / (points - 1))
        lr = None
        for unit, now, end in (("tok", tok, total_tokens), ("ba", round(step), round(total_steps)), ("sp", samples, total_samples)):
            try:
                lr = cfg.optimizer.lr * lr_multiplier_at(cfg.scheduler, f"{now}{unit}", f"{end}{unit}")
                break
            except ValueError:
                continue  # the schedule's times are in another unit; try the next one
        rows.append({
            "tokens": tok,
            "step": step,
            "lr": lr,
            "batch_rows": _rows_at(cfg, tok),
            "seq_len": cfg.data.max_seq_len,
            "mlm": cfg.data.mlm_probability,
            "global_theta": mcfg.global_rope_theta,
            "local_theta": mcfg.local_rope_theta,
        })
    return rows


def _fmt_int(x: float) -> str:
    x = float(x)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.0f}"


def _kernel_on_this_machine(cfg: Any, mcfg: Any) -> tuple[str | None, str | None]:
    """(the attention kernel training would use on the device this machine would use, why none can), or (None, None)."""
    import torch

    device = cfg.device if cfg.device != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    if device == "gpu" and not torch.cuda.is_available():
        return None, None  # a GPU run checked on a machine without one: nothing to say about its kernel here
    try:
        return check_attention_kernel(cfg, mcfg, device), None
    except ConfigError as e:
        return None, str(e)


def dry_run_report(loaded: LoadedRun) -> str:
    """The full dry-run text: resolved config, sizes, FLOPs, schedule table."""
    cfg, mcfg = loaded.cfg, loaded.model_cfg
    check_block_names(mcfg, loaded.source)  # a misspelt block name: one config error, no report
    counts = count_params(mcfg)
    fpt = flops_per_token(mcfg, cfg.data.max_seq_len, cfg.data.mlm_probability)
    lines = [f"# resolved config ({loaded.source})", loaded.to_yaml().rstrip(), ""]
    lines.append(
        f"parameters: {counts['total']:,} (embeddings {counts['embeddings']:,}, encoder {counts['encoder']:,}, "
        f"head {counts['head']:,})"
    )
    lines.append(f"training FLOPs per token at seq_len {cfg.data.max_seq_len}: {fpt:.4g}")
    kernel, problem = _kernel_on_this_machine(cfg, mcfg)
    if kernel:
        lines.append(f"attention kernel on this machine: {kernel} (model.attn_backend {mcfg.attn_backend})")
    if problem:
        lines.append(f"warning: training on this machine would stop with: config error: {problem}")
    rows = schedule_table(loaded)
    lines.append(
        f"run: {cfg.max_duration} = ~{_fmt_int(rows[-1]['tokens'])} tokens in ~{_fmt_int(rows[-1]['step'])} steps; "
        f"training FLOPs ~{fpt * rows[-1]['tokens']:.3g}"
    )
    lines.append("")
    header = ["tokens", "step", "lr", "batch_rows", "seq_len", "mlm", "global_theta", "local_theta"]
    table = [header]
    for r in rows:
        table.append([
            _fmt_int(r["tokens"]), _fmt_int(r["step"]), "n/a" if r["lr"] is None else f"{r['lr']:.3e}",
            str(r["batch_rows"]), str(r["seq_len"]), f"{r['mlm']:.2f}", f"{r['global_theta']:g}", f"{r['local_theta']:g}",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for j, row in enumerate(table):
        lines.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
