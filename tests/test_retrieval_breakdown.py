"""Per-query nDCG@10 and the per-file breakdown (flexbert.retrieval.breakdown)."""
from __future__ import annotations

import math

import pytest
import torch

from flexbert.retrieval.breakdown import macro_ndcg, ndcg_by_file, per_query_ndcg


class _TableEncoder:
    """Stands in for a SentenceTransformer: each text maps to a fixed vector."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table

    def eval(self):
        return self

    def encode(self, texts, *, normalize_embeddings, **_):
        v = torch.tensor([self.table[t] for t in texts], dtype=torch.float32)
        return torch.nn.functional.normalize(v, dim=1) if normalize_embeddings else v


def _records(n: int, path=lambda i: "a.py") -> list[dict]:
    return [{"query": f"q{i}", "document": f"d{i}", "path": path(i)} for i in range(n)]


def test_a_query_scores_one_over_log2_of_its_documents_rank_plus_two():
    # q0 -> d0 ranked first; q1 prefers d0 so d1 is second; q2 is orthogonal to d2 and ranked last
    table = {"q0": [1, 0, 0], "d0": [1, 0, 0], "q1": [1, 0.5, 0], "d1": [0, 1, 0], "q2": [1, 1, 0], "d2": [0, 0, 1]}
    scores = per_query_ndcg(_TableEncoder(table), _records(3))
    assert scores == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(4)])
    assert per_query_ndcg(_TableEncoder(table), _records(3), k=2) == pytest.approx([1.0, 1 / math.log2(3), 0.0])


def test_by_file_puts_the_largest_file_first_and_macro_weighs_each_file_once():
    records = _records(4, path=lambda i: "big.py" if i < 3 else "small.py")
    by_file = ndcg_by_file(records, [1.0, 0.0, 0.5, 0.0])
    assert list(by_file) == ["big.py", "small.py"]
    assert by_file["big.py"] == {"queries": 3, "ndcg@10": pytest.approx(0.5)}
    assert macro_ndcg(by_file) == pytest.approx(0.25)  # the pooled mean would be 0.375
    with pytest.raises(ValueError, match="4 records but 3 scores"):
        ndcg_by_file(records, [1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="no records"):
        per_query_ndcg(_TableEncoder({}), [])


def test_pooled_mean_matches_the_information_retrieval_evaluator(tmp_path):
    pytest.importorskip("sentence_transformers")
    from _finetune_support import random_mlm, train_tiny_tokenizer

    from flexbert.export import save_hf
    from flexbert.retrieval.model import retriever_from_checkpoint
    from flexbert.retrieval.train_eval import evaluate_retrieval

    records = [{"query": f"return the {w} of the values", "document": f"def {w}(xs):\n    return {w}_of(xs) + {i}",
                "path": f"m{i % 3}.py", "id": str(i)}
               for i, w in enumerate(["sum", "max", "min", "mean", "median", "mode", "range", "count", "first",
                                      "last", "sorted", "unique", "product", "norm", "total", "average"])]
    train_tiny_tokenizer(tmp_path / "tok", [r["query"] + "\n" + r["document"] for r in records])
    save_hf(random_mlm(seed=0), tmp_path / "hf", tokenizer=str(tmp_path / "tok"))
    with retriever_from_checkpoint(tmp_path / "hf", max_seq_len=32, device="cpu") as (model, _):
        pooled = evaluate_retrieval(model, records)["ndcg@10"]
        scores = per_query_ndcg(model, records)
    assert sum(scores) / len(scores) == pytest.approx(pooled, abs=1e-6)
    assert 0.0 < pooled < 1.0  # a random model ranks some but not all documents first
