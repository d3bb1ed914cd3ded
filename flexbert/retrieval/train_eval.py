"""Fine-tune a SentenceTransformer on (query, document) pairs with in-batch negatives, then score retrieval.

Training is a plain PyTorch loop around sentence-transformers' own MultipleNegativesRankingLoss
(each query's document is its positive; the other documents of the batch are its negatives),
so neither `datasets` nor `accelerate` (needed by SentenceTransformerTrainer) is required.
Documents are deduplicated by the dataset builder, so a batch never holds a false negative
that is an exact copy of the positive.

Evaluation uses sentence_transformers.evaluation.InformationRetrievalEvaluator with cosine
similarity: every test query against the corpus of all test documents (one relevant each),
reporting nDCG@10, MRR@10, Recall@1/10 and MAP@10.
"""
from __future__ import annotations

import logging
import math
import random
import warnings
from typing import Any, Sequence

import torch

__all__ = ["train_retriever", "evaluate_retrieval", "ir_inputs"]

log = logging.getLogger(__name__)


def _features(model: Any, texts: Sequence[str]) -> dict[str, Any]:
    prep = getattr(model, "preprocess", None) or model.tokenize
    feats = prep(list(texts))
    return {k: (v.to(model.device) if isinstance(v, torch.Tensor) else v) for k, v in feats.items()}


def train_retriever(model: Any, pairs: Sequence[dict], *, epochs: int = 1, batch_size: int = 32, lr: float = 5e-5,
                    warmup_fraction: float = 0.1, weight_decay: float = 0.01, scale: float = 20.0,
                    seed: int = 0) -> list[dict[str, float]]:
    """Train `model` in place; returns [{'epoch', 'loss', 'steps'}] (mean loss per epoch).

    Batches are drawn in an order set by `seed` only; the last partial batch is dropped
    unless it is the only one (in-batch negatives need at least two pairs).
    """
    try:  # sentence-transformers >= 5.6 location; the old one warns
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # pragma: no cover
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    if len(pairs) < 2:
        raise ValueError(f"need at least 2 training pairs for in-batch negatives, got {len(pairs)}")
    torch.manual_seed(seed)
    loss_fn = MultipleNegativesRankingLoss(model, scale=scale)
    batch_size = min(batch_size, len(pairs))
    steps_per_epoch = max(1, len(pairs) // batch_size)
    total = steps_per_epoch * epochs
    warmup = int(total * warmup_fraction)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    history = []
    model.train()
    rng = random.Random(seed)
    for epoch in range(1, epochs + 1):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            q = _features(model, [pairs[i]["query"] for i in idx])
            d = _features(model, [pairs[i]["document"] for i in idx])
            loss = loss_fn([q, d], labels=None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        row = {"epoch": epoch, "loss": sum(losses) / len(losses), "steps": len(losses)}
        log.info("epoch %d: loss %.4f over %d steps", epoch, row["loss"], row["steps"])
        history.append(row)
    model.eval()
    return history


def ir_inputs(records: Sequence[dict]) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """(queries, corpus, relevant_docs) for InformationRetrievalEvaluator: corpus = every document."""
    queries = {f"q{r['id']}": r["query"] for r in records}
    corpus = {f"d{r['id']}": r["document"] for r in records}
    relevant = {f"q{r['id']}": {f"d{r['id']}"} for r in records}
    return queries, corpus, relevant


def evaluate_retrieval(model: Any, records: Sequence[dict], *, batch_size: int = 64, name: str = "test") -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@1, Recall@10 and MAP@10 (cosine) of `model` on `records`."""
    try:
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    except ImportError:  # pragma: no cover
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

    if not records:
        raise ValueError(f"the {name} split is empty: nothing to evaluate")
    queries, corpus, relevant = ir_inputs(records)
    ev = InformationRetrievalEvaluator(queries, corpus, relevant, mrr_at_k=[10], ndcg_at_k=[10],
                                       accuracy_at_k=[1, 10], precision_recall_at_k=[1, 10], map_at_k=[10],
                                       batch_size=batch_size, name=name, write_csv=False,
                                       score_functions={"cosine": _cos_sim()}, main_score_function="cosine")
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        raw = ev(model)
    want = {"ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@1": "recall@1", "recall@10": "recall@10",
            "map@10": "map@10"}
    out: dict[str, float] = {}
    for key, suffix in want.items():
        hits = [v for k, v in raw.items() if k.endswith(f"cosine_{suffix}")]
        if not hits:
            raise KeyError(f"InformationRetrievalEvaluator returned no '*cosine_{suffix}' among {sorted(raw)}")
        v = float(hits[0])
        out[key] = v if math.isfinite(v) else float("nan")
    out["queries"] = len(queries)
    out["corpus"] = len(corpus)
    return out


def _cos_sim():
    from sentence_transformers.util import cos_sim

    return cos_sim
