"""Read what each run left in its folder and summarise it as one row of results.

Metrics come from `<run_dir>/metrics.jsonl` (FlexBERT's full-precision JSON-lines logger,
exact steps) when it exists, else from the console output captured in `<run_dir>/train.log`,
parsed the way Composer 0.32's ConsoleLogger prints it:

    [batch=12/300]:                         <- a train block; the step is the batch count
    	 Train loss/train/total: 3.2100        <- "\\t {prefix}{key}: {value:.4f}"
    [Eval batch=2/2] Eval on eval data:     <- an eval block (ConsoleLogger.eval_end)
    	 Eval metrics/eval/MaskedLoss: 7.7827

Eval blocks carry no step; they are given the step of the last train block printed before
them, which is exact when `eval_interval` is a multiple of `console_log_interval` and a
lower bound otherwise (the JSON-lines file has no such ambiguity). A later value for the
same step wins, so a resumed run that repeats a few steps reads correctly.
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
from typing import Any, Iterable, Optional

from flexbert.errors import ConfigError
from flexbert.long_context.compare import probe_score
from flexbert.sweep.expand import format_value
from flexbert.sweep.io import read_json
from flexbert.train.flops import count_params

__all__ = ["parse_console_log", "read_metrics_jsonl", "load_series", "summarize", "collect_run", "collect", "COLUMNS", "KEYS", "status_of"]

# Result columns <- logged metric keys (FlexBERT's MLM model and callbacks)
KEYS = {
    "eval_loss": "metrics/eval/MaskedLoss",
    "eval_accuracy": "metrics/eval/MaskedAccuracy",
    "train_loss": "loss/train/total",
    "tokens_per_sec": "throughput/tokens_per_sec",
}
MEMORY_KEYS = ("memory/peak_allocated_gib", "memory/peak_rss_gib")

COLUMNS = [
    "run", "variant", "seed", "status", "exit_code", "steps",
    "params_total", "params_encoder",
    "eval_loss", "best_eval_loss", "eval_accuracy", "train_loss",
    "tokens_per_sec", "peak_memory_gib", "wall_time_s", "downstream_score",
]

_TRAIN_HEADER = re.compile(r"^(?:\[epoch=\d+\])?\[(\w+)=(\d+)(?:/[^\]]*)?\]:?\s*$")
_EVAL_HEADER = re.compile(r"^\[Eval batch=\d+/\d+\] Eval on .* data:?\s*$")
_METRIC = re.compile(r"^\s+(Train|Eval) (\S+): (\S.*?)\s*$")

Series = dict[str, dict[int, float]]  # metric key -> {step: value}


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None  # strings ("...") and "Tensor of shape ..." are not metrics we can plot


def parse_console_log(lines: Iterable[str]) -> Series:
    """Metrics printed by Composer's ConsoleLogger, as {key: {step: value}}."""
    series: Series = {}
    step: Optional[int] = None
    in_block = False
    for raw in lines:
        line = raw.rstrip("\n")
        header = _TRAIN_HEADER.match(line)
        if header:
            step, in_block = int(header.group(2)), True
            continue
        if _EVAL_HEADER.match(line):
            in_block = True
            continue
        metric = _METRIC.match(line)
        if metric and in_block:
            value = _number(metric.group(3))
            if value is not None:
                series.setdefault(metric.group(2), {})[step if step is not None else 0] = value
            continue
        in_block = False  # any other output (warnings, prints) ends a block
    return series


def read_metrics_jsonl(path: str) -> Series:
    """A JsonlLogger file (`{"step": 12, "key": value, ...}` per line) as {key: {step: value}}."""
    series: Series = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be cut short
            step = record.pop("step", None)
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    series.setdefault(key, {})[int(step or 0)] = float(value)
    return series


def load_series(run_dir: str) -> tuple[Series, str]:
    """The run's metrics and where they came from ('metrics.jsonl', 'train.log' or '')."""
    jsonl = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(jsonl) and os.path.getsize(jsonl) > 0:
        return read_metrics_jsonl(jsonl), "metrics.jsonl"
    log = os.path.join(run_dir, "train.log")
    if os.path.isfile(log):
        with open(log, errors="replace") as f:
            return parse_console_log(f), "train.log"
    return {}, ""


def _final(points: dict[int, float]) -> Optional[float]:
    return points[max(points)] if points else None


def summarize(series: Series) -> dict[str, Any]:
    """Final/best eval loss, accuracy, train loss, median tokens/s, peak memory, last step."""
    eval_loss = series.get(KEYS["eval_loss"], {})
    finite = [v for v in eval_loss.values() if math.isfinite(v)]
    tps = [v for v in series.get(KEYS["tokens_per_sec"], {}).values() if math.isfinite(v)]
    memory = [v for k in MEMORY_KEYS for v in series.get(k, {}).values()]
    steps = [s for points in series.values() for s in points]
    return {
        "steps": max(steps) if steps else None,
        "eval_loss": _final(eval_loss),
        "best_eval_loss": min(finite) if finite else None,
        "eval_accuracy": _final(series.get(KEYS["eval_accuracy"], {})),
        "train_loss": _final(series.get(KEYS["train_loss"], {})),
        # The median ignores the slow first batches and evaluation pauses.
        "tokens_per_sec": statistics.median(tps) if tps else None,
        "peak_memory_gib": max(memory) if memory else None,
    }


def status_of(run_dir: str) -> str:
    """done (DONE marker), failed (FAILED marker), incomplete (started, no marker) or pending."""
    if os.path.isfile(os.path.join(run_dir, "DONE")):
        return "done"
    if os.path.isfile(os.path.join(run_dir, "FAILED")):
        return "failed"
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        return "incomplete"
    return "pending"


def _params(sweep, run, cache: dict) -> dict[str, Optional[int]]:
    """Parameter counts from the run's model config (FlexBERT's loader and count_params)."""
    if run.variant not in cache:
        try:
            from flexbert.train.loading import load_run  # import cost: torch loads only to count a run's parameters

            loaded = load_run(sweep.base, [f"{k}={format_value(v)}" for k, v in run.overrides])
            counts = count_params(loaded.model_cfg)
            cache[run.variant] = {"params_total": counts["total"], "params_encoder": counts["encoder"]}
        except ConfigError:  # a non-FlexBERT base config (custom command): no counts, not an error
            cache[run.variant] = {"params_total": None, "params_encoder": None}
    return cache[run.variant]


def _read_result(path: str) -> dict[str, Any]:
    """A run's JSON result file (DONE, FAILED, downstream.json) as a dict; {} when it is missing.

    An unreadable one is reported on stderr, naming the file, and its run is summarised without it.
    """
    if not os.path.isfile(path):
        return {}
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = f"{type(e).__name__}: {e}"
    else:
        if isinstance(data, dict):
            return data
        why = f"holds a {type(data).__name__}, not a JSON object"
    print(f"sweep: cannot use {path} ({why}); the run is reported without it", file=sys.stderr)
    return {}


def collect_run(sweep, run, params_cache: Optional[dict] = None) -> dict[str, Any]:
    """One row of results.csv for `run` (plus `eval_curve` and `error` for the report)."""
    params_cache = {} if params_cache is None else params_cache
    series, source = load_series(run.run_dir)
    row: dict[str, Any] = {"run": run.name, "variant": run.variant, "seed": run.seed, "status": status_of(run.run_dir)}
    row.update({axis: label for axis, label in run.levels if axis not in COLUMNS})  # `variant` (shorthand) is already there
    row.update(_params(sweep, run, params_cache))
    row.update(summarize(series))
    marker = {}
    for name in ("DONE", "FAILED"):
        path = os.path.join(run.run_dir, name)
        if os.path.isfile(path):
            marker = _read_result(path)
            break
    row["exit_code"] = marker.get("exit_code", 0 if row["status"] == "done" else None)
    row["wall_time_s"] = marker.get("wall_time_s")
    row["error"] = marker.get("log_tail") if row["status"] == "failed" else None
    row["downstream_score"] = _read_result(os.path.join(run.run_dir, "downstream.json")).get("score")
    metric = sweep.spec.metric
    if metric not in row:  # a raw logged key used as the metric: its final value
        row[metric] = _final(series.get(metric, {}))
        if row[metric] is None and metric.startswith("long_context/"):  # else from the probes' results.json
            row[metric] = probe_score(run.run_dir, metric)
    row["metrics_source"] = source
    row["eval_curve"] = sorted(series.get(KEYS["eval_loss"], {}).items())
    return row


def collect(sweep, runs) -> list[dict[str, Any]]:
    """Rows for all runs, in expansion order."""
    cache: dict = {}
    return [collect_run(sweep, run, cache) for run in runs]
