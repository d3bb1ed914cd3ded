"""Code-search retrieval evaluation (docstring summary -> function code) with sentence-transformers.

    python -m flexbert.retrieval.dataset --output data/retrieval/stdlib     # pairs from local sources
    python -m flexbert.retrieval --checkpoint runs/demo/hf --data data/retrieval/stdlib

Modules: dataset (pairs + file-level split), model (checkpoint -> SentenceTransformer with mean
pooling), train_eval (in-batch-negatives fine-tuning, InformationRetrievalEvaluator), corpus
(MLM pretraining text with held-out functions filtered out), breakdown (per-query nDCG@10, per-file
means and their macro average).
sentence-transformers is an optional dependency (``pip install -e .[eval]``), imported lazily.
See docs/retrieval.md.
"""
