"""Turn per-target scores into the probes' figures and a flat `scores` dict.

Accuracy is top-1 over target tokens, pooled over documents. Each figure comes with a
standard error computed over documents (each document's mean is one unit: the tokens of one
span are not independent), and MLM-by-distance gains use paired differences (the same span with
and without its copy), which is why they are much tighter than the two accuracies they subtract.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from flexbert.long_context.probes import ProbeDoc
from flexbert.long_context.scoring import TargetScores

__all__ = ["summarize_mlm_distance", "summarize_passkey", "summarize_positions", "flat_scores"]


def _se(values: Sequence[float]) -> Optional[float]:
    """Standard error of the mean of per-document values (None with fewer than two)."""
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def _pooled(scores: Sequence[TargetScores]) -> tuple[float, float, float]:
    """(token accuracy, mean nll, exact-match share of documents)."""
    correct = np.concatenate([s.correct for s in scores])
    nll = np.concatenate([s.nll for s in scores])
    exact = [bool(s.correct.all()) for s in scores]
    return float(correct.mean()), float(nll.mean()), float(np.mean(exact))


def summarize_mlm_distance(docs: Sequence[ProbeDoc], scores: Sequence[TargetScores], local_window: Optional[int],
                           span_length: int) -> dict[str, Any]:
    """Per distance: accuracy with the copy, without it (baseline), the paired gain, exact match, loss."""
    by: dict[tuple, list[TargetScores]] = {}
    for doc, s in zip(docs, scores):
        by.setdefault(doc.cell, []).append(s)
    distances = sorted({cell[1] for cell in by})
    buckets = []
    for d in distances:
        copy, base = by[("copy", d)], by[("baseline", d)]
        acc, nll, exact = _pooled(copy)
        b_acc, b_nll, b_exact = _pooled(base)
        diffs = [float(c.correct.mean() - b.correct.mean()) for c, b in zip(copy, base)]
        lengths = sorted({len(doc) for doc in docs if doc.cell == ("copy", d)})
        buckets.append({
            "distance": d,
            "doc_length": lengths[0] if len(lengths) == 1 else lengths,
            "n_spans": len(copy),
            "beyond_local_window": None if local_window is None else d > local_window,
            "accuracy": acc, "accuracy_se": _se([float(c.correct.mean()) for c in copy]),
            "exact_match": exact, "nll": nll,
            "baseline_accuracy": b_acc, "baseline_accuracy_se": _se([float(b.correct.mean()) for b in base]),
            "baseline_exact_match": b_exact, "baseline_nll": b_nll,
            "accuracy_gain": acc - b_acc, "accuracy_gain_se": _se(diffs),
        })
    return {"span_length": span_length, "local_window": local_window, "buckets": buckets}


def summarize_passkey(docs: Sequence[ProbeDoc], scores: Sequence[TargetScores], lengths: Sequence[int],
                      depths: Sequence[float], chance: float) -> dict[str, Any]:
    """Accuracy and exact match as (length x depth) grids, plus the key-to-query distance of each cell."""
    by: dict[tuple, list[tuple[ProbeDoc, TargetScores]]] = {}
    for doc, s in zip(docs, scores):
        by.setdefault(doc.cell, []).append((doc, s))
    acc, exact, se, dist = [], [], [], []
    for n in lengths:
        row_acc, row_exact, row_se, row_dist = [], [], [], []
        for depth in depths:
            cell = by[(n, depth)]
            a, _, e = _pooled([s for _, s in cell])
            row_acc.append(a)
            row_exact.append(e)
            row_se.append(_se([float(s.correct.mean()) for _, s in cell]))
            row_dist.append(float(np.mean([doc.meta["distance"] for doc, _ in cell])))
        acc.append(row_acc)
        exact.append(row_exact)
        se.append(row_se)
        dist.append(row_dist)
    return {"lengths": list(lengths), "depths": list(depths), "accuracy": acc, "accuracy_se": se,
            "exact_match": exact, "key_to_query_distance": dist, "chance": chance}


def summarize_positions(docs: Sequence[ProbeDoc], scores: Sequence[TargetScores], edges: Sequence[int],
                        mask_prob: float) -> dict[str, Any]:
    """MLM loss and accuracy of masked tokens in position buckets [edges[i], edges[i+1])."""
    pos = np.concatenate([s.positions for s in scores])
    nll = np.concatenate([s.nll for s in scores])
    correct = np.concatenate([s.correct for s in scores])
    doc_of = np.concatenate([np.full(len(s.positions), j) for j, s in enumerate(scores)])
    buckets = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (pos >= lo) & (pos < hi)
        per_doc = [float(nll[sel & (doc_of == j)].mean()) for j in range(len(scores)) if (sel & (doc_of == j)).any()]
        buckets.append({"start": int(lo), "end": int(hi), "count": int(sel.sum()),
                        "loss": float(nll[sel].mean()) if sel.any() else None,
                        "loss_se": _se(per_doc),
                        "accuracy": float(correct[sel].mean()) if sel.any() else None})
    return {"length": len(docs[0]) if docs else None, "documents": len(docs),
            "natural_documents": sum(bool(d.meta.get("natural_document")) for d in docs),
            "mask_prob": mask_prob, "loss": float(nll.mean()), "accuracy": float(correct.mean()),
            "buckets": buckets}


def _depth_name(depth: float) -> str:
    return f"{depth:g}"


def flat_scores(results: dict[str, Any]) -> dict[str, float]:
    """Every headline figure as `probe/...` -> number (what the callback logs and the sweep reads)."""
    out: dict[str, float] = {}
    mlm = results.get("mlm_distance")
    if mlm:
        b = mlm["buckets"]
        for key in ("accuracy", "baseline_accuracy", "accuracy_gain"):
            out[f"mlm_distance/{key}"] = float(np.mean([x[key] for x in b]))
        beyond = [x for x in b if x["beyond_local_window"]]
        if beyond:
            out["mlm_distance/accuracy_beyond_window"] = float(np.mean([x["accuracy"] for x in beyond]))
            out["mlm_distance/accuracy_gain_beyond_window"] = float(np.mean([x["accuracy_gain"] for x in beyond]))
        for x in b:
            for key in ("accuracy", "baseline_accuracy", "accuracy_gain", "exact_match"):
                out[f"mlm_distance/d{x['distance']}/{key}"] = float(x[key])
    pk = results.get("passkey")
    if pk:
        grid = np.asarray(pk["accuracy"], dtype=float)
        out["passkey/accuracy"] = float(grid.mean())
        out["passkey/exact_match"] = float(np.mean(pk["exact_match"]))
        for n, row in zip(pk["lengths"], grid):
            out[f"passkey/L{n}/accuracy"] = float(row.mean())
        for j, depth in enumerate(pk["depths"]):
            out[f"passkey/depth{_depth_name(depth)}/accuracy"] = float(grid[:, j].mean())
    pos = results.get("loss_by_position")
    if pos:
        out["loss_by_position/loss"] = pos["loss"]
        out["loss_by_position/accuracy"] = pos["accuracy"]
        for x in pos["buckets"]:
            if x["loss"] is not None:
                out[f"loss_by_position/p{x['start']}-{x['end']}/loss"] = x["loss"]
                out[f"loss_by_position/p{x['start']}-{x['end']}/accuracy"] = x["accuracy"]
    return out
