"""PNG plots of probe results: one run (three panels) and a comparison of runs (e.g. phases).

Panels: MLM accuracy by distance (with the copy, and the no-copy baseline), the passkey
accuracy heat map (length x depth), MLM loss by position. Dashed lines mark the local
attention window and the model's trained context. Files are written atomically.
"""
from __future__ import annotations

import io
from typing import Any, Sequence
from flexbert.outputs import atomic_write_bytes

__all__ = ["plot_results", "plot_comparison"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _marks(ax, results: dict[str, Any], window: bool = True) -> None:
    """Dashed verticals at the local window and the trained context."""
    mlm = results.get("mlm_distance") or {}
    if window and mlm.get("local_window"):
        ax.axvline(mlm["local_window"], color="gray", ls=":", lw=1, label=f"local window ±{mlm['local_window']}")
    ctx = results.get("trained_context")
    if ctx:
        ax.axvline(ctx, color="tab:red", ls="--", lw=1, label=f"trained context {ctx}")


def _mlm_panel(ax, runs: Sequence[tuple[str, dict]], baseline: bool) -> None:
    for j, (label, res) in enumerate(runs):
        b = (res.get("mlm_distance") or {}).get("buckets") or []
        if not b:
            continue
        xs = [x["distance"] for x in b]
        color = f"C{j}"
        ax.errorbar(xs, [x["accuracy"] for x in b], yerr=[x["accuracy_se"] or 0 for x in b], marker="o", ms=4,
                    capsize=2, color=color, label=f"{label} with copy" if label else "with copy")
        if baseline:
            ax.plot(xs, [x["baseline_accuracy"] for x in b], marker="x", ls="--", color=color, alpha=0.7,
                    label=f"{label} no copy" if label else "no copy (baseline)")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="distance to the earlier copy (tokens)", ylabel="span token accuracy", ylim=(-0.02, 1.02),
           title="MLM by distance")
    ax.grid(alpha=0.3)


def _heatmap(fig, ax, res: dict, title: str) -> None:
    pk = res["passkey"]
    im = ax.imshow(pk["accuracy"], vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(pk["depths"])), [f"{d:g}" for d in pk["depths"]])
    ax.set_yticks(range(len(pk["lengths"])), [str(n) for n in pk["lengths"]])
    for i, row in enumerate(pk["accuracy"]):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    ax.set(xlabel="key depth (0 = start, 1 = next to the query)", ylabel="document length", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def _position_panel(ax, runs: Sequence[tuple[str, dict]]) -> None:
    for j, (label, res) in enumerate(runs):
        pos = res.get("loss_by_position")
        if not pos:
            continue
        b = [x for x in pos["buckets"] if x["loss"] is not None]
        mids = [max(1, (x["start"] + x["end"]) / 2) for x in b]
        ax.errorbar(mids, [x["loss"] for x in b], yerr=[x["loss_se"] or 0 for x in b], marker="o", ms=4, capsize=2,
                    color=f"C{j}", label=label or None)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="position in document (bucket middle)", ylabel="MLM loss (nats)", title="Loss by position")
    ax.grid(alpha=0.3)


def plot_results(results: dict[str, Any], path: str, title: str = "") -> None:
    """One run's probes side by side."""
    plt = _plt()
    panels = [p for p in ("mlm_distance", "passkey", "loss_by_position") if results.get(p)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.4), squeeze=False,
                             layout="constrained")
    for ax, probe in zip(axes[0], panels):
        if probe == "mlm_distance":
            _mlm_panel(ax, [("", results)], baseline=True)
            _marks(ax, results)
            ax.legend(fontsize=7)
        elif probe == "passkey":
            _heatmap(fig, ax, results, f"Passkey accuracy (chance {results['passkey']['chance']:.4f})")
        else:
            _position_panel(ax, [("", results)])
            _marks(ax, results, window=False)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)


def plot_comparison(runs: Sequence[tuple[str, dict[str, Any]]], path: str, title: str = "") -> None:
    """Several runs (labelled) on shared axes, plus one passkey heat map per run."""
    plt = _plt()
    has_pk = [r for r in runs if r[1].get("passkey")]
    ncols = max(3, len(has_pk))
    nrows = 2 if has_pk else 1
    fig = plt.figure(figsize=(5.4 * ncols, 4.4 * nrows), layout="constrained")
    grid = fig.add_gridspec(nrows, ncols)
    contexts = sorted({res["trained_context"] for _, res in runs if res.get("trained_context")})

    def context_lines(ax) -> None:
        for n in contexts:
            ax.axvline(n, color="gray", ls="--", lw=0.8)
            ax.annotate(f"ctx {n}", (n, 1), xycoords=("data", "axes fraction"), fontsize=6, rotation=90,
                        va="top", ha="right", color="gray")

    ax = fig.add_subplot(grid[0, 0])
    _mlm_panel(ax, runs, baseline=True)
    context_lines(ax)
    ax.legend(fontsize=6)
    ax = fig.add_subplot(grid[0, 1])
    for j, (label, res) in enumerate(runs):
        pk = res.get("passkey")
        if pk:
            ax.plot(pk["lengths"], [sum(r) / len(r) for r in pk["accuracy"]], marker="o", color=f"C{j}", label=label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="document length", ylabel="passkey accuracy (mean over depths)", ylim=(-0.02, 1.02),
           title="Passkey by length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[0, 2])
    _position_panel(ax, runs)
    context_lines(ax)
    ax.legend(fontsize=7)
    for j, (label, res) in enumerate(has_pk):
        _heatmap(fig, fig.add_subplot(grid[1, j]), res, f"Passkey: {label}")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)
