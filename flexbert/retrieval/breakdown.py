"""Per-query nDCG@10 and its breakdown by source file.

The code-search splits are made by file, and one large file can hold a third of a split (for
example tkinter/__init__.py in the standard library's validation split). The pooled nDCG@10 then
mostly measures that file. `ndcg_by_file` gives each file's mean and `macro_ndcg` weighs every
file equally, so a comparison can say whether a win is broad or carried by one file.

Each query has exactly one relevant document (its own function), so nDCG@10 of a query is
1 / log2(rank + 2) when the relevant document is ranked `rank` (0-based) within the top 10, else 0;
the mean over queries equals the pooled figure of `train_eval.evaluate_retrieval`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import torch

__all__ = ["per_query_ndcg", "ndcg_by_file", "macro_ndcg"]


def per_query_ndcg(model: Any, records: Sequence[dict], *, k: int = 10, batch_size: int = 64) -> list[float]:
    """nDCG@k of every record's query against the documents of all `records` (cosine similarity)."""
    if not records:
        raise ValueError("no records to score")

    def embed(texts: list[str]) -> torch.Tensor:
        return model.encode(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                            show_progress_bar=False).float().cpu()

    model.eval()
    with torch.no_grad():
        queries = embed([r["query"] for r in records])
        documents = embed([r["document"] for r in records])
    sims = queries @ documents.T
    # documents scored strictly above the relevant one: its 0-based rank
    ranks = (sims > sims.diagonal()[:, None]).sum(dim=1).tolist()
    return [1.0 / math.log2(r + 2) if r < k else 0.0 for r in ranks]


def ndcg_by_file(records: Sequence[dict], scores: Sequence[float]) -> dict[str, dict[str, float]]:
    """{path: {"queries": n, "ndcg@10": mean}} from per-query scores, largest files first."""
    if len(records) != len(scores):
        raise ValueError(f"{len(records)} records but {len(scores)} scores")
    groups: dict[str, list[float]] = defaultdict(list)
    for record, score in zip(records, scores):
        groups[record["path"]].append(score)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return {path: {"queries": len(s), "ndcg@10": sum(s) / len(s)} for path, s in ordered}


def macro_ndcg(by_file: dict[str, dict[str, float]]) -> float:
    """Mean of the per-file means: every held-out file counts once, whatever its size."""
    if not by_file:
        raise ValueError("no files to average")
    return sum(v["ndcg@10"] for v in by_file.values()) / len(by_file)
