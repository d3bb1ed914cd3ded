"""Markdown tables of probe results: one run (the CLI's printout) and a comparison of runs."""
from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["results_markdown", "comparison_markdown"]


def _f(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pm(v: Optional[float], se: Optional[float], digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _where(source: dict[str, Any]) -> str:
    """What was probed: the checkpoint read by the CLI, or the training run and batch for the callback."""
    if source.get("checkpoint"):
        return f"`{source['checkpoint']}`"
    if source.get("kind") == "training":
        return f"`{source.get('save_folder')}` at batch {source.get('batch')} (callback)"
    return "-"


def results_markdown(results: dict[str, Any]) -> str:
    """One run's figures (± standard error over documents)."""
    lines = []
    mlm = results.get("mlm_distance")
    if mlm:
        lines += [f"MLM by distance (span {mlm['span_length']} tokens, local window ±{mlm['local_window']}):", ""]
        lines += _table(["distance", "doc length", "spans", "accuracy (copy)", "accuracy (no copy)", "gain", "exact match"],
                        [[str(x["distance"]), str(x["doc_length"]), str(x["n_spans"]), _pm(x["accuracy"], x["accuracy_se"]),
                          _pm(x["baseline_accuracy"], x["baseline_accuracy_se"]),
                          _pm(x["accuracy_gain"], x["accuracy_gain_se"]), _f(x["exact_match"], 2)]
                         for x in mlm["buckets"]])
        lines.append("")
    pk = results.get("passkey")
    if pk:
        lines += [f"Passkey accuracy (rows: length, columns: depth; chance {pk['chance']:.4f}):", ""]
        lines += _table(["length"] + [f"{d:g}" for d in pk["depths"]],
                        [[str(n)] + [_f(v, 2) for v in row] for n, row in zip(pk["lengths"], pk["accuracy"])])
        lines.append("")
    pos = results.get("loss_by_position")
    if pos:
        lines += [f"Loss by position ({pos['documents']} documents of {pos['length']} tokens, "
                  f"{pos['natural_documents']} natural; {pos['mask_prob']:.0%} masked):", ""]
        lines += _table(["positions", "masked tokens", "loss", "accuracy"],
                        [[f"{x['start']}-{x['end']}", str(x["count"]), _pm(x["loss"], x["loss_se"]), _f(x["accuracy"])]
                         for x in pos["buckets"]])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def comparison_markdown(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Runs side by side: MLM gain by distance, passkey by length, loss by position bucket."""
    labels = [label for label, _ in runs]
    lines: list[str] = []
    digests = {res.get("settings_digest") for _, res in runs}
    if len(digests) > 1:
        lines += ["**Warning: these runs used different probe settings or held-out data (settings_digest differs); "
                  "their figures are not directly comparable.**", ""]
    lines += _table(["run", "trained context", "global θ", "probed"],
                    [[label, str(res.get("trained_context")), _f((res.get("model") or {}).get("global_rope_theta"), 0),
                      _where(res.get("source") or {})] for label, res in runs])
    lines.append("")
    first = next((res for _, res in runs if res.get("mlm_distance")), None)
    if first:
        ds = [x["distance"] for x in first["mlm_distance"]["buckets"]]
        lines += ["MLM by distance: span accuracy with the copy / without it (gain):", ""]
        rows = []
        for d in ds:
            row = [str(d)]
            for _, res in runs:
                b = {x["distance"]: x for x in (res.get("mlm_distance") or {}).get("buckets", [])}.get(d)
                row.append("-" if b is None else f"{b['accuracy']:.3f} / {b['baseline_accuracy']:.3f} "
                                                   f"({b['accuracy_gain']:+.3f})")
            rows.append(row)
        lines += _table(["distance"] + labels, rows)
        lines.append("")
    first = next((res for _, res in runs if res.get("passkey")), None)
    if first:
        lines += ["Passkey accuracy by length (mean over depths):", ""]
        rows = []
        for n in first["passkey"]["lengths"]:
            row = [str(n)]
            for _, res in runs:
                pk = res.get("passkey") or {}
                acc = dict(zip(pk.get("lengths", []), pk.get("accuracy", [])))
                row.append("-" if n not in acc else _f(sum(acc[n]) / len(acc[n])))
            rows.append(row)
        lines += _table(["length"] + labels, rows)
        lines.append("")
    first = next((res for _, res in runs if res.get("loss_by_position")), None)
    if first:
        lines += ["MLM loss by position (nats):", ""]
        rows = []
        for x in first["loss_by_position"]["buckets"]:
            row = [f"{x['start']}-{x['end']}"]
            for _, res in runs:
                b = {(y["start"], y["end"]): y for y in (res.get("loss_by_position") or {}).get("buckets", [])}
                y = b.get((x["start"], x["end"]))
                row.append("-" if y is None else _f(y["loss"]))
            rows.append(row)
        lines += _table(["positions"] + labels, rows)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
