"""A FlexBERT export is a working PyLate 1.6 ColBERT backbone: load, encode, rerank, train one step.

Why a side environment: ColBERT models are trained and served with PyLate, and PyLate 1.6 pins
sentence-transformers==5.3.0 and transformers<=5.3.0, so it cannot be installed beside the main
environment's sentence-transformers 6 / transformers 5.24. docker/side_envs.sh builds a `pylate`
folder with those versions; the checks below run in a subprocess on it (see docs/side_envs.md).

The folder is what `python -m flexbert.export CKPT OUT --tokenizer TOK` writes (FlexBERT's own
byte-level BPE tokenizer included), read the way PyLate users read a base model: offline,
without trust_remote_code. PyLate adds its [Q] / [D] prefix tokens and a random linear projection
to EMBEDDING_SIZE dimensions on top of the encoder.
"""
from __future__ import annotations

import string

import pytest
import torch

pytest.importorskip("transformers")

from _side_env import run_in_side_env  # noqa: E402
from test_export_helpers import TOL, max_diff_real, random_model, tiny_config  # noqa: E402

VERSIONS = {"pylate": "1.6.", "sentence_transformers": "5.3.", "transformers": "5.3."}
CORPUS = ["the quick brown fox jumps over the lazy dog.",
          "green apples taste sour, red apples taste sweet!",
          "rust and python are programming languages; both have packages."] * 10
# Each text is a query and the document identical to it. Tokenized, each is longer than the
# sliding window (8), so local and global layers both shape the embeddings.
TEXTS = ["the quick brown fox jumps over the lazy dog.",
         "green apples taste sour, red apples taste sweet!",
         "rust and python are programming languages; both have packages."]
EMBEDDING_SIZE, QUERY_LENGTH, DOCUMENT_LENGTH = 16, 32, 48


def colbert_in_pylate(folder: str, texts: list, ids: list, mask: list,
                      embedding_size: int, query_length: int, document_length: int) -> dict:
    """(Runs in the side env.) Load `folder` as a pylate ColBERT; encode, rerank, score, train one step."""
    import torch
    from pylate import losses, models, rank, scores

    torch.manual_seed(0)  # PyLate's projection and the [Q] / [D] embeddings are random
    model = models.ColBERT(folder, device="cpu", trust_remote_code=False, embedding_size=embedding_size,
                           query_length=query_length, document_length=document_length)
    backbone = model[0].auto_model
    out = {"modules": [type(m).__name__ for m in model], "backbone": type(backbone).__name__,
           "prefix_ids": [model.query_prefix_id, model.document_prefix_id], "vocab": len(model.tokenizer)}
    with torch.no_grad():
        hidden = backbone(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    out["hidden"] = hidden.tolist()

    model.eval()
    queries = model.encode(texts, is_query=True)
    documents = model.encode(texts, is_query=False)
    out["query_shapes"] = [list(q.shape) for q in queries]
    out["document_shapes"] = [list(d.shape) for d in documents]
    out["norms"] = [float(n) for e in queries + documents for n in torch.as_tensor(e).norm(dim=-1)]
    ranked = rank.rerank(documents_ids=[list(range(len(texts)))] * len(texts), queries_embeddings=queries,
                         documents_embeddings=[documents] * len(texts))
    out["reranked"] = [[(r["id"], float(r["score"])) for r in per_query] for per_query in ranked]
    docs = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(d) for d in documents], batch_first=True)
    docs_mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(d)) for d in documents], batch_first=True)
    out["scores"] = scores.colbert_scores(torch.stack([torch.as_tensor(q) for q in queries]), docs,
                                          documents_mask=docs_mask).tolist()

    # One contrastive step: (query, identical document, another text), with in-batch negatives.
    model.train()
    loss_fn = losses.Contrastive(model)
    features = [model.tokenize(texts, is_query=True), model.tokenize(texts, is_query=False),
                model.tokenize(texts[1:] + texts[:1], is_query=False)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = loss_fn(features)
    loss.backward()
    out["grads_finite"] = all(bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None)
    out["no_grad"] = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    out["unchanged"] = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    out["params"] = len(before)
    with torch.no_grad():
        out["loss"], out["loss_after"] = loss.item(), loss_fn(features).item()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Export a tiny random model with FlexBERT's tokenizer; run every PyLate check once in the side env."""
    from transformers import AutoTokenizer

    from flexbert.data.tokenizer import train_tokenizer
    from flexbert.export import save_hf

    root = tmp_path_factory.mktemp("pylate")
    info = train_tokenizer(CORPUS, vocab_size=300, output=root / "tok", show_progress=False)
    cfg = tiny_config(vocab_size=info.vocab_size, pad_token_id=info.pad_id, cls_token_id=info.cls_id,
                      sep_token_id=info.sep_id, mask_token_id=info.mask_id)
    model = random_model(cfg, seed=0)
    save_hf(model, root / "hf", tokenizer=root / "tok")
    tok = AutoTokenizer.from_pretrained(str(root / "hf"), local_files_only=True)
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # PyLate's default skiplist: punctuation tokens are dropped from document embeddings.
    skip = {tok.convert_tokens_to_ids(c) for c in string.punctuation}
    skipped = [sum(int(i) in skip for i in row[row_mask.bool()]) for row, row_mask in zip(ids, mask)]
    with torch.no_grad():
        flex_hidden = model.model(ids, attention_mask=mask)
    side = run_in_side_env("pylate", colbert_in_pylate, VERSIONS, folder=str(root / "hf"), texts=TEXTS,
                           ids=ids.tolist(), mask=mask.tolist(), embedding_size=EMBEDDING_SIZE,
                           query_length=QUERY_LENGTH, document_length=DOCUMENT_LENGTH)
    return dict(side=side, cfg=cfg, ids=ids, mask=mask, skipped=skipped, flex_hidden=flex_hidden)


def test_loads_as_colbert_on_our_encoder(run):
    """Transformer (ModernBertModel) + Dense projection; [Q] and [D] are new ids after our vocabulary."""
    side, cfg = run["side"], run["cfg"]
    assert side["modules"] == ["Transformer", "Dense"]
    assert side["backbone"] == "ModernBertModel"
    assert side["prefix_ids"] == [cfg.vocab_size, cfg.vocab_size + 1]
    assert side["vocab"] == cfg.vocab_size + 2


def test_backbone_computes_flexbert_hidden_states(run):
    """Every encoder weight is ours, not re-initialised: PyLate's encoder output equals FlexBERT's."""
    mask = run["mask"]
    assert mask.sum(1).min() > 2 * run["cfg"].local_attention  # the sliding window matters
    theirs = torch.tensor(run["side"]["hidden"])
    assert theirs.shape == run["flex_hidden"].shape
    assert max_diff_real(run["flex_hidden"], theirs, mask) <= TOL


def test_encode_shapes_and_unit_norms(run):
    """Queries are expanded with [MASK] to query_length; documents keep their tokens plus [D], less punctuation."""
    side = run["side"]
    assert side["query_shapes"] == [[QUERY_LENGTH, EMBEDDING_SIZE]] * len(TEXTS)
    lengths = run["mask"].sum(1).tolist()
    assert all(run["skipped"]) and max(lengths) < DOCUMENT_LENGTH  # punctuation everywhere, nothing truncated
    assert side["document_shapes"] == [[n + 1 - k, EMBEDDING_SIZE] for n, k in zip(lengths, run["skipped"])]
    assert side["norms"] == pytest.approx([1.0] * len(side["norms"]), abs=1e-5)


def test_each_query_ranks_its_identical_document_first(run):
    """rerank sorts by MaxSim score, puts the identical text first, and agrees with colbert_scores."""
    side = run["side"]
    for q, ranked in enumerate(side["reranked"]):
        ids = [doc_id for doc_id, _ in ranked]
        scores = [score for _, score in ranked]
        assert ids[0] == q and sorted(ids) == list(range(len(TEXTS)))
        assert scores == sorted(scores, reverse=True)
        assert scores == pytest.approx([side["scores"][q][d] for d in ids], abs=1e-5)
    matrix = torch.tensor(side["scores"])
    assert torch.equal(matrix.argmax(1), torch.arange(len(TEXTS)))
    assert (matrix.diagonal() <= QUERY_LENGTH + 1e-4).all()  # a sum of QUERY_LENGTH cosine maxima


def test_one_contrastive_training_step(run):
    """Finite loss, finite gradients reaching every parameter, every parameter updated, lower loss after."""
    side = run["side"]
    assert side["loss"] > 0 and torch.isfinite(torch.tensor(side["loss"]))
    assert side["grads_finite"] and side["no_grad"] == []
    assert side["params"] > 0 and side["unchanged"] == []
    assert side["loss_after"] < side["loss"]
