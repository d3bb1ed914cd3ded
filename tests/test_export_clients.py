"""Every real client of an exported Hugging Face folder works offline, without remote code.

One random FlexBERT model (perturbed weights, so no tensor is at its init value) is exported
with FlexBERT's own tokenizer (``flexbert.data.tokenizer.train_tokenizer``: byte-level BPE,
[CLS] ... [SEP] template, special ids UNK 0, CLS 1, SEP 2, PAD 3, MASK 4), exactly what
``python -m flexbert.export CKPT OUT --tokenizer TOK`` writes. Then each client reads the plain
folder the way its users do (nothing is downloaded, ``trust_remote_code`` stays False):

- transformers: AutoTokenizer, AutoModelForMaskedLM and AutoModel (eager and sdpa; flash
  attention 2 on CUDA), AutoModelForSequenceClassification (num_labels=3, forward, loss,
  backward), the ``fill-mask`` pipeline;
- sentence-transformers: SentenceTransformer(folder) and Transformer + Pooling(mean), encode,
  and one contrastive (MultipleNegativesRankingLoss) training step.

Each is compared with FlexBERT's own numbers on the same token ids: logits, hidden states,
pooled embeddings, losses and gradients, at non-pad positions only (padding legitimately differs).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from test_export_helpers import TOL, flex_logits, max_diff_real, random_model, replace, tiny_config  # noqa: E402

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "def add(a, b):\n    return a + b",
    "a packed row holds several documents of different lengths",
    "sliding window attention sees 64 tokens on each side",
] * 10

# Lengths after tokenization: one far longer than 2 x the local window (8), one shorter than the
# window, one in between: global and sliding layers both matter, and padding is exercised.
TEXTS = [
    "the quick brown fox jumps over the lazy dog while an unfamiliar zebra quietly watches from the riverbank",
    "fox",
    "def add(a, b):\n    return a + b",
    "several documents share one packed row",
]

AUTO_CLASSES = ["AutoModelForMaskedLM", "AutoModel"]
# Keys an AutoModel legitimately skips when it reads a ForMaskedLM folder (the MLM head).
HEAD_KEYS = {"head.dense.weight", "head.dense.bias", "head.norm.weight", "head.norm.bias", "decoder.bias"}


def export_folder(dest: Path, tok_dir: Path, tok_info, seed: int = 3, **overrides):
    """Export a random tiny FlexBERT model whose special ids are the tokenizer's; return the model."""
    from flexbert.export import save_hf

    cfg = tiny_config(vocab_size=tok_info.vocab_size, pad_token_id=tok_info.pad_id, cls_token_id=tok_info.cls_id,
                      sep_token_id=tok_info.sep_id, mask_token_id=tok_info.mask_id, **overrides)
    model = random_model(cfg, seed=seed)
    save_hf(model, dest, tokenizer=tok_dir)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(folder, FlexBERT model, its tokenizer as transformers loads it, tokenizer dir and info)."""
    from transformers import AutoTokenizer

    from flexbert.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("clients")
    tok_info = train_tokenizer(CORPUS, vocab_size=300, output=root / "tok", show_progress=False)
    folder = root / "hf"
    model = export_folder(folder, root / "tok", tok_info)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return SimpleNamespace(folder=folder, model=model, tokenizer=tokenizer, tok_dir=root / "tok", tok_info=tok_info)


def batch(tokenizer, texts=TEXTS):
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def flex_hidden(model, ids, mask) -> torch.Tensor:
    """FlexBERT's encoder output (B, S, D): the bare FlexBertModel inside the masked LM."""
    with torch.no_grad():
        return model.model(ids, attention_mask=mask)


def flex_mean_embeddings(model, tokenizer, texts) -> torch.Tensor:
    """FlexBERT's mean-pooled states (masked mean over real tokens), one unpadded text at a time."""
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        h = flex_hidden(model, ids, torch.ones_like(ids))
        rows.append(h[0].mean(0))
    return torch.stack(rows)


# --------------------------------------------------------------------------- transformers


def test_folder_is_plain_modernbert_and_tokenizer_round_trips(exported):
    """No remote code is needed, and AutoTokenizer gives FlexBERT's special ids and [CLS] ... [SEP]."""
    import json

    from transformers import AutoConfig, ModernBertConfig

    raw = json.loads((exported.folder / "config.json").read_text())
    assert raw["model_type"] == "modernbert" and "auto_map" not in raw  # nothing to trust
    config = AutoConfig.from_pretrained(str(exported.folder), local_files_only=True, trust_remote_code=False)
    assert type(config) is ModernBertConfig
    cfg, tok = exported.model.config, exported.tokenizer
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id, cfg.mask_token_id) == (3, 1, 2, 4)
    assert len(tok) == cfg.vocab_size == config.vocab_size
    ids, mask = batch(tok)
    lengths = mask.sum(1)
    assert ids[:, 0].eq(cfg.cls_token_id).all()
    assert ids[torch.arange(len(TEXTS)), lengths - 1].eq(cfg.sep_token_id).all()
    assert ids[mask == 0].eq(cfg.pad_token_id).all()
    window = cfg.local_attention
    assert lengths.max() > 2 * window and lengths.min() < window, lengths.tolist()


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("auto_class", AUTO_CLASSES)
def test_auto_class_matches_flexbert(exported, auto_class, attn_implementation):
    """MLM logits / last hidden state equal FlexBERT's at non-pad positions; only the MLM head is skipped."""
    import transformers

    cls = getattr(transformers, auto_class)
    hf, info = cls.from_pretrained(str(exported.folder), attn_implementation=attn_implementation,
                                   local_files_only=True, trust_remote_code=False, output_loading_info=True)
    hf.eval()
    assert hf.config._attn_implementation == attn_implementation
    assert type(hf).__name__ == ("ModernBertForMaskedLM" if auto_class == "AutoModelForMaskedLM" else "ModernBertModel")
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    skipped = set(info["unexpected_keys"])
    assert skipped <= (set() if auto_class == "AutoModelForMaskedLM" else HEAD_KEYS), skipped

    ids, mask = batch(exported.tokenizer)
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask)
    if auto_class == "AutoModelForMaskedLM":
        ours, theirs = flex_logits(exported.model, ids, mask), out.logits
    else:
        ours, theirs = flex_hidden(exported.model, ids, mask), out.last_hidden_state
    assert theirs.shape == ours.shape
    assert ours[mask.bool()].abs().max() > 0.5  # a real comparison, not zeros against zeros
    assert max_diff_real(ours, theirs, mask) <= TOL


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_sequence_classification_forward_loss_backward(exported, tmp_path, pooling):
    """num_labels=3 on top of the exported encoder: logits, loss and every gradient equal FlexBERT's.

    The HF classifier is freshly initialised (the only missing weights); loading its state dict
    into FlexBertForSequenceClassification checks that both compute the same function and the
    same gradients on the exported weights.
    """
    from transformers import AutoModelForSequenceClassification

    from flexbert.model.classification import FlexBertForSequenceClassification

    folder = tmp_path / "hf"
    model = export_folder(folder, exported.tok_dir, exported.tok_info, classifier_pooling=pooling)
    torch.manual_seed(0)
    hf, info = AutoModelForSequenceClassification.from_pretrained(
        str(folder), num_labels=3, attn_implementation="sdpa", local_files_only=True, trust_remote_code=False,
        output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"], info
    assert set(info["unexpected_keys"]) <= {"decoder.bias"}, info
    assert hf.config.num_labels == 3 and hf.config.classifier_pooling == pooling
    exported_sd = model.state_dict()
    for name, tensor in hf.state_dict().items():  # the encoder and head are the exported ones
        if not name.startswith("classifier."):
            assert torch.equal(tensor, exported_sd[name]), name

    # The export writes every dropout as 0.0 (HF has one attention_dropout for two places); FlexBERT's
    # default attn_out_dropout 0.1 is turned off so that train mode is deterministic on both sides.
    ours = FlexBertForSequenceClassification(replace(model.config, num_labels=3, attn_out_dropout=0.0))
    ours.load_state_dict(hf.state_dict(), strict=True)
    hf.train()
    ours.train()

    ids, mask = batch(exported.tokenizer)
    labels = torch.tensor([0, 2, 1, 2])
    out = hf(input_ids=ids, attention_mask=mask, labels=labels)
    ref = ours(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (len(TEXTS), 3)
    assert (out.logits - ref.logits).abs().max() <= TOL
    assert math.isfinite(out.loss.item()) and out.loss.item() > 0
    assert abs(out.loss.item() - F.cross_entropy(out.logits, labels).item()) <= 1e-6
    assert abs(out.loss.item() - ref.loss.item()) <= TOL

    out.loss.backward()
    ref.loss.backward()
    ref_grads = dict(ours.named_parameters())
    for name, p in hf.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    for name in ("classifier.weight", "model.embeddings.tok_embeddings.weight", "model.layers.0.attn.Wqkv.weight"):
        assert dict(hf.named_parameters())[name].grad.abs().max() > 0, name  # gradients reach the encoder

    before = out.loss.item()
    with torch.no_grad():
        for p in hf.parameters():
            p -= 1e-2 * p.grad
    assert hf(input_ids=ids, attention_mask=mask, labels=labels).loss.item() < before


MASKED = {
    "short": "the quick brown [MASK] jumps over the lazy dog",
    "long": "the quick brown fox jumps over the lazy dog while an unfamiliar zebra quietly [MASK] from the riverbank",
}


@pytest.mark.parametrize("text", list(MASKED.values()), ids=list(MASKED))
def test_fill_mask_pipeline_agrees_with_flexbert(exported, text):
    """The pipeline's top-k tokens are FlexBERT's top-k at the [MASK] position, with its probabilities."""
    from transformers import pipeline

    top_k = 5
    fill = pipeline("fill-mask", model=str(exported.folder), trust_remote_code=False, top_k=top_k, device="cpu")
    preds = fill(text)
    assert len(preds) == top_k
    assert all({"score", "token", "token_str", "sequence"} <= set(p) for p in preds)

    ids = torch.tensor([exported.tokenizer(text)["input_ids"]])
    positions = (ids[0] == exported.tokenizer.mask_token_id).nonzero().flatten().tolist()
    assert len(positions) == 1, positions
    logits = flex_logits(exported.model, ids, torch.ones_like(ids))[0, positions[0]]
    top = logits.topk(top_k + 1)
    assert top.values[0] - top.values[1] > 100 * TOL  # the argmax is not a near-tie
    assert preds[0]["token"] == int(logits.argmax())
    assert [p["token"] for p in preds] == top.indices[:top_k].tolist()
    for p in preds:
        assert p["token_str"].strip() in p["sequence"]

    # The whole distribution, compared as log-probabilities: the near-uniform probabilities of a
    # random model would hide logit differences far above TOL in probability space.
    vocab = len(exported.tokenizer)
    every = fill(text, top_k=vocab)
    tokens = [p["token"] for p in every]
    assert sorted(tokens) == list(range(vocab))
    scores = torch.tensor([math.log(p["score"]) for p in every], dtype=torch.float64)
    assert (scores - logits.log_softmax(-1).double()[tokens]).abs().max() <= TOL


def _flash_attention_2_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    if importlib.util.find_spec("flash_attn") is None:
        return "flash-attn not installed (pip install -e '.[gpu]')"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        return "transformers cannot use the installed flash-attn (is_flash_attn_2_available() is False)"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("auto_class", AUTO_CLASSES)
def test_flash_attention_2_matches_flexbert(exported, auto_class):
    """flash_attention_2 (fp16, CUDA) is as close to FlexBERT's fp32 numbers as HF's own sdpa in fp16."""
    reason = _flash_attention_2_skip_reason()
    if reason:
        pytest.skip(reason)
    import transformers

    cls = getattr(transformers, auto_class)
    ids, mask = batch(exported.tokenizer)
    if auto_class == "AutoModelForMaskedLM":
        ours = flex_logits(exported.model, ids, mask)
    else:
        ours = flex_hidden(exported.model, ids, mask)
    errors = {}
    for impl in ("flash_attention_2", "sdpa"):
        hf = cls.from_pretrained(str(exported.folder), attn_implementation=impl, dtype=torch.float16,
                                 local_files_only=True, trust_remote_code=False).to("cuda").eval()
        assert hf.config._attn_implementation == impl
        with torch.no_grad():
            out = hf(input_ids=ids.cuda(), attention_mask=mask.cuda())
        theirs = (out.logits if auto_class == "AutoModelForMaskedLM" else out.last_hidden_state).float().cpu()
        assert torch.isfinite(theirs[mask.bool()]).all(), impl
        errors[impl] = max_diff_real(ours, theirs, mask)
    scale = ours[mask.bool()].abs().max().item()
    assert errors["flash_attention_2"] <= 2 * errors["sdpa"] + 2e-3 * scale, errors


# --------------------------------------------------------------------------- sentence-transformers


def _sentence_transformer(folder: Path, how: str):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if how == "auto":  # a plain HF folder: sentence-transformers builds Transformer + Pooling("mean") itself
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=False)
    word = Transformer(str(folder), model_kwargs={"attn_implementation": "sdpa", "local_files_only": True},
                       processor_kwargs={"local_files_only": True}, config_kwargs={"local_files_only": True})
    pool = Pooling(word.get_embedding_dimension(), "mean")
    return SentenceTransformer(modules=[word, pool], device="cpu")


@pytest.mark.parametrize("how", ["auto", "explicit"])
def test_sentence_transformer_encode_is_flexbert_mean_pooling(exported, how):
    """encode() gives FlexBERT's masked-mean states (padding in ST's batch changes nothing)."""
    st = _sentence_transformer(exported.folder, how)
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    assert [type(m) for m in st] == [Transformer, Pooling]
    assert st[1].pooling_mode == "mean"
    assert type(st[0].auto_model).__name__ == "ModernBertModel"
    assert st.get_embedding_dimension() == exported.model.config.hidden_size

    emb = st.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    ref = flex_mean_embeddings(exported.model, exported.tokenizer, TEXTS)
    assert emb.shape == ref.shape == (len(TEXTS), exported.model.config.hidden_size)
    assert (emb - ref).abs().max() <= TOL
    assert ref.abs().max() > 0.1
    # The mean is over real tokens only: a padded-batch mean over all positions would differ.
    ids, mask = batch(exported.tokenizer)
    unmasked = flex_hidden(exported.model, ids, mask).mean(1)
    assert (unmasked - ref).abs().max() > 100 * TOL


def test_sentence_transformer_contrastive_training_step(exported):
    """One MultipleNegativesRankingLoss step: the loss is FlexBERT's InfoNCE, finite, and it drops."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim

    # A plain torch loop: SentenceTransformerTrainer needs `datasets` and `accelerate`, which the
    # test environment need not have; the loss module and model(features) are the same either way.
    anchors = ["the quick brown fox", "def add(a, b):", "packed rows", "sliding window attention"]
    positives = ["jumps over the lazy dog", "    return a + b", "several documents of different lengths",
                 "sees 64 tokens on each side"]
    st = _sentence_transformer(exported.folder, "auto")
    loss_fn = MultipleNegativesRankingLoss(st)
    st.train()
    params = dict(st.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    optimizer = torch.optim.SGD(st.parameters(), lr=0.05)

    loss = loss_fn([st.preprocess(anchors), st.preprocess(positives)], None)
    assert math.isfinite(loss.item()) and loss.item() > 0
    a = flex_mean_embeddings(exported.model, exported.tokenizer, anchors)
    p = flex_mean_embeddings(exported.model, exported.tokenizer, positives)
    expected = F.cross_entropy(loss_fn.scale * cos_sim(a, p), torch.arange(len(anchors)))
    assert abs(loss.item() - expected.item()) <= 1e-4

    optimizer.zero_grad()
    loss.backward()
    for name, param in params.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    optimizer.step()
    changed = [k for k, v in params.items() if not torch.equal(v.detach(), before[k])]
    assert "0.model.embeddings.tok_embeddings.weight" in changed
    assert len(changed) == len(params), sorted(set(params) - set(changed))
    with torch.no_grad():
        after = loss_fn([st.preprocess(anchors), st.preprocess(positives)], None)
    assert after.item() < loss.item()
