"""Write a sweep's results: results.csv, report.md and PNG plots (all written atomically).

- results.csv: one row per run (status, parameters, losses, accuracy, speed, memory, time).
- report.md: a table of variants sorted by the sweep's metric (mean, std and n over seeds, and
  the difference to the baseline: the first variant in the sweep file), the per-run table, and
  the failed runs with their log tails.
- plots/eval_loss_curves.png: eval-loss curves per variant (mean over seeds at the steps all seeds
  logged); plots/<metric>_by_variant.png: the metric per variant as bars, seed std as error bars.
"""
from __future__ import annotations

import csv
import io
import math
import os
import statistics
from typing import Any, Optional

from flexbert.outputs import atomic_write_bytes, atomic_write_text
from flexbert.sweep.collect import COLUMNS

__all__ = ["aggregate", "write_csv", "render_markdown", "write_plots", "write_report"]


def _columns(rows: list[dict[str, Any]], axes: list[str], metric: str) -> list[str]:
    cols = COLUMNS[:3] + [a for a in axes if a not in COLUMNS] + COLUMNS[3:]
    return cols + ([metric] if metric not in cols else [])


def _num(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def aggregate(rows: list[dict[str, Any]], metric: str, maximize: bool) -> list[dict[str, Any]]:
    """Per-variant mean/std/n of the metric over finished runs, best first (variants without data last)."""
    order: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["variant"] not in groups:
            order.append(row["variant"])
            groups[row["variant"]] = []
        if row["status"] == "done":
            groups[row["variant"]].append(row)
    out = []
    for variant in order:
        done = groups[variant]
        entry: dict[str, Any] = {"variant": variant, "n": 0, "mean": None, "std": None}
        values = [v for v in (_num(r.get(metric)) for r in done) if v is not None]
        if values:
            entry.update(n=len(values), mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else None)
        for col in ("best_eval_loss", "eval_accuracy", "params_total", "tokens_per_sec", "peak_memory_gib", "wall_time_s",
                    "downstream_score"):
            vals = [v for v in (_num(r.get(col)) for r in done) if v is not None]
            entry[col] = statistics.fmean(vals) if vals else None
        out.append(entry)
    baseline = out[0]["mean"] if out else None
    for entry in out:
        entry["delta"] = entry["mean"] - baseline if entry["mean"] is not None and baseline is not None else None
    with_data = sorted((e for e in out if e["mean"] is not None), key=lambda e: e["mean"], reverse=maximize)
    return with_data + [e for e in out if e["mean"] is None]


def write_csv(path: str, rows: list[dict[str, Any]], axes: list[str], metric: str) -> None:
    """results.csv: one row per run; empty cells where a value is unknown."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows, axes, metric), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _f(value: Any, digits: int = 4) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # counts: steps, parameters
    v = _num(value)
    if v is None:
        return "-"
    if abs(v) >= 1e5 or float(v).is_integer() and abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def render_markdown(sweep, rows: list[dict[str, Any]], plots: list[str]) -> str:
    """The report as markdown (see the module docstring)."""
    metric, maximize = sweep.spec.metric, sweep.maximize
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "incomplete", "pending")}
    lines = [
        f"# Sweep `{sweep.name}`",
        "",
        f"From `{sweep.source}` on base `{sweep.base}`: {len(rows)} runs "
        f"({', '.join(f'{n} {s}' for s, n in counts.items() if n)}), seeds {list(sweep.spec.seeds)}.",
        f"Metric: `{metric}` ({'higher' if maximize else 'lower'} is better); mean and sample std over finished seeds; "
        f"Δ is the difference to the baseline `{rows[0]['variant'] if rows else '-'}` (the first variant).",
        "",
        f"## Variants by {metric}",
        "",
    ]
    downstream = bool(sweep.spec.downstream)
    body = []
    for rank, e in enumerate(aggregate(rows, metric, maximize), 1):
        delta = "-" if e["delta"] is None else f"{e['delta']:+.4f}"
        body.append([str(rank), f"`{e['variant']}`", _f(e["mean"]), _f(e["std"]), str(e["n"]), delta, _f(e["best_eval_loss"]),
                     _f(e["eval_accuracy"]), _f(e["params_total"]), _f(e["tokens_per_sec"], 0), _f(e["peak_memory_gib"], 2),
                     _f(e["wall_time_s"], 0)] + ([_f(e["downstream_score"])] if downstream else []))
    lines += _table(["rank", "variant", f"{metric} mean", "std", "n", "Δ vs baseline", "best eval loss", "eval accuracy",
                     "params", "tokens/s", "peak mem GiB", "wall s"] + (["downstream"] if downstream else []), body)
    lines += ["", "## Runs", ""]
    body = [[f"`{r['run']}`", r["status"], str(r["seed"]), _f(r.get(metric)), _f(r.get("best_eval_loss")), _f(r.get("eval_accuracy")),
             _f(r.get("train_loss")), _f(r.get("params_total")), _f(r.get("tokens_per_sec"), 0), _f(r.get("peak_memory_gib"), 2),
             _f(r.get("wall_time_s"), 0), _f(r.get("steps"))] + ([_f(r.get("downstream_score"))] if downstream else [])
            for r in rows]
    lines += _table(["run", "status", "seed", metric, "best eval loss", "eval accuracy", "train loss", "params", "tokens/s",
                     "peak mem GiB", "wall s", "steps"] + (["downstream"] if downstream else []), body)
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""]
        for r in failed:
            lines += [f"### `{r['run']}` (exit {r.get('exit_code')})", "", "```", (r.get("error") or "").rstrip(), "```", ""]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in plots]
    return "\n".join(lines).rstrip() + "\n"


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float]]:
    """Mean over seeds at the steps every seed logged (the union if they share none)."""
    sets = [dict(c) for c in curves if c]
    if not sets:
        return [], []
    common = set.intersection(*(set(s) for s in sets)) or set.union(*(set(s) for s in sets))
    steps = sorted(common)
    return steps, [statistics.fmean(s[k] for s in sets if k in s) for k in steps]


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_plots(sweep, rows: list[dict[str, Any]], folder: str) -> list[str]:
    """Write the PNGs into `folder`; returns their paths relative to the report's folder."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    written = []
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for variant in variants:
        steps, mean = _mean_curve([r.get("eval_curve") or [] for r in rows if r["variant"] == variant and r["status"] == "done"])
        if steps:
            ax.plot(steps, mean, marker="o", markersize=3, label=variant)
            drawn += 1
    if drawn:
        ax.set(xlabel="step", ylabel="eval loss (MLM)", title=f"{sweep.name}: eval loss, mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        _save(fig, os.path.join(folder, "eval_loss_curves.png"))
        written.append("plots/eval_loss_curves.png")
    plt.close(fig)

    agg = [e for e in aggregate(rows, sweep.spec.metric, sweep.maximize) if e["mean"] is not None]
    if agg:
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(agg) + 2), 4.5))
        xs = range(len(agg))
        ax.bar(xs, [e["mean"] for e in agg], yerr=[e["std"] or 0.0 for e in agg], capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(list(xs), [e["variant"] for e in agg], rotation=30, ha="right", fontsize=8)
        lo = min(e["mean"] - (e["std"] or 0.0) for e in agg)
        hi = max(e["mean"] + (e["std"] or 0.0) for e in agg)
        pad = (hi - lo) * 0.5 or abs(hi) * 0.05 or 1.0
        ax.set_ylim(lo - pad if lo - pad > 0 or lo < 0 else 0, hi + pad)  # zoom in: differences are small
        ax.set(ylabel=sweep.spec.metric, title=f"{sweep.name}: {sweep.spec.metric} (error bars: std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        name = sweep.spec.metric.replace("/", "_") + "_by_variant.png"
        _save(fig, os.path.join(folder, name))
        written.append(f"plots/{name}")
        plt.close(fig)
    return written


def write_report(sweep, rows: list[dict[str, Any]]) -> dict[str, str]:
    """results.csv, plots/ and report.md in the sweep's output folder; returns their paths."""
    out = sweep.output
    os.makedirs(out, exist_ok=True)
    axes = [axis.name for axis in sweep.axes]
    write_csv(os.path.join(out, "results.csv"), rows, axes, sweep.spec.metric)
    plots = write_plots(sweep, rows, os.path.join(out, "plots"))
    atomic_write_text(os.path.join(out, "report.md"), render_markdown(sweep, rows, plots))
    return {"csv": os.path.join(out, "results.csv"), "report": os.path.join(out, "report.md"),
            "plots": ", ".join(os.path.join(out, p) for p in plots)}
