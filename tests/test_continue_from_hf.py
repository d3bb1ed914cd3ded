"""Continued pretraining from a Hugging Face ModernBERT folder (`init_from: {hf: DIR}`).

The HF folder is a random-initialised transformers ModernBertForMaskedLM (tiny, non-default
thetas / window / global period) saved with save_pretrained; nothing is downloaded.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from _train_support import REPO, make_corpus, tiny_run, write_yaml
from flexbert.config.loading import load_run_config
from flexbert.train.loading import load_run
from flexbert.config.strict import ConfigError
from flexbert.data.tokenizer import load_tokenizer, train_tokenizer
from flexbert.data.tokenizer_extend import extend_tokenizer

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

HF_KW = dict(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
             global_rope_theta=20000.0, local_rope_theta=5000.0, local_attention=8, global_attn_every_n_layers=2,
             max_position_embeddings=128)
TEXTS = ["the quick brown fox jumps over the lazy dog %d" % i for i in range(200)]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> tuple[Path, Path]:
    """(HF model folder with its tokenizer, the tokenizer folder)."""
    root = tmp_path_factory.mktemp("hf")
    tok = train_tokenizer(TEXTS, 320, root / "tok", show_progress=False)
    assert tok.vocab_size == 320 and (tok.cls_id, tok.sep_id) == (1, 2)
    config = transformers.ModernBertConfig(
        **HF_KW, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id, sep_token_id=tok.sep_id,
        bos_token_id=tok.cls_id, eos_token_id=tok.sep_id, attention_dropout=0.0, embedding_dropout=0.0,
        mlp_dropout=0.0, reference_compile=False, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(config)
    with torch.no_grad():
        for p in model.parameters():  # norms and decoder bias too: nothing left at a trivial value
            p.add_(torch.randn_like(p) * 0.05)
    folder = root / "modernbert"
    model.save_pretrained(folder)
    for f in (root / "tok").iterdir():
        shutil.copyfile(f, folder / f.name)
    return folder, root / "tok"


def _hf_logits(folder: Path, ids, mask):
    model = transformers.ModernBertForMaskedLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def _padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (2, 40), generator=g)  # longer than the window (8): local layers matter
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    ids[1, 25:] = 3  # pad
    mask[1, 25:] = 0
    ids[1, 24] = 2
    return ids, mask


def _run_yaml(tmp: Path, hf: Path, tok: Path, corpus: Path, **extra) -> Path:
    run = tiny_run(corpus, tmp / "run", max_duration="3ba", tokenizer=str(tok),
                   init_from={"hf": str(hf)}, export_hf=str(tmp / "export"), **extra)
    run["model"] = {"attn_backend": "eager"}  # a safe override; everything else comes from config.json
    run["data"]["split"] = "train"
    return write_yaml(tmp / "run.yaml", run)


def _model_logits(model, ids, mask):
    model.eval()
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def test_continue_from_hf_parity_config_training_and_export(hf_folder, tmp_path, monkeypatch):
    from flexbert.export import load_hf
    from flexbert.train.builder import build_trainer, finish_run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    hf, tok = hf_folder
    corpus = make_corpus(tmp_path / "corpus", n_train=60, n_val=4)
    loaded = load_run(str(_run_yaml(tmp_path, hf, tok, corpus)))
    m = loaded.model_cfg
    # the resolved config keeps HF's architecture, thetas, window and period
    assert (m.global_rope_theta, m.local_rope_theta, m.local_attention, m.global_attn_every_n_layers) == (20000.0, 5000.0, 8, 2)
    assert (m.hidden_size, m.intermediate_size, m.num_hidden_layers, m.vocab_size) == (32, 48, 3, 320)
    assert (m.pad_token_id, m.cls_token_id, m.sep_token_id, m.mask_token_id) == (3, 1, 2, 4)
    assert m.attn_backend == "eager" and m.max_position_embeddings == 128

    run = build_trainer(loaded)
    model = run.composer_model.model
    ids, mask = _padded_batch()
    ours, theirs = _model_logits(model, ids, mask), _hf_logits(hf, ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], rtol=0, atol=1e-5)

    model.train()
    run.trainer.fit()
    assert int(run.trainer.state.timestamp.batch) == 3
    out = finish_run(run)
    exported = json.loads((Path(out) / "config.json").read_text())
    assert (exported["global_rope_theta"], exported["local_rope_theta"], exported["local_attention"]) == (20000.0, 5000.0, 8)
    back = load_hf(out, attn_backend="eager")
    hf_back = transformers.ModernBertForMaskedLM.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        a = _model_logits(back, ids, mask)[keep]
        b = hf_back(input_ids=ids, attention_mask=mask).logits[keep]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(a, theirs[keep], atol=1e-4)  # training changed the weights


def test_architecture_override_is_refused_naming_the_key(hf_folder, tmp_path):
    hf, tok = hf_folder
    path = _run_yaml(tmp_path, hf, tok, tmp_path / "corpus")
    with pytest.raises(ConfigError, match="model.hidden_size"):
        load_run(str(path), ["model.hidden_size=64"])
    with pytest.raises(ConfigError, match="model.preset"):
        load_run(str(path), ["model.preset=tiny"])
    # safe keys are fine: dropout and context length
    loaded = load_run(str(path), ["model.attn_out_dropout=0.1", "model.max_position_embeddings=256"])
    assert loaded.model_cfg.attn_out_dropout == 0.1 and loaded.model_cfg.max_position_embeddings == 256
    # the config layer cannot read an HF folder (export sits above it): its loader says which one can
    with pytest.raises(ConfigError, match=r"continues from the Hugging Face folder .* flexbert.train.loading.load_run"):
        load_run_config(str(path))
    # the folder's config.json has one reader, shared with load_hf
    from flexbert.export import read_hf_config

    assert read_hf_config(hf).hidden_size == loaded.model_cfg.hidden_size


def test_extended_tokenizer_keeps_ids_and_old_logits(hf_folder, tmp_path, monkeypatch):
    from flexbert.train.builder import build_trainer

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    hf, tok = hf_folder
    (tmp_path / "new.txt").write_text("zebraquokka\n# a comment\nmarsupial\n")
    corpus_txt = tmp_path / "corpus.txt"
    corpus_txt.write_text("\n".join(["axolotl axolotl pangolin"] * 5) + "\n")
    from flexbert.data.tokenizer_extend import read_token_list

    info, added = extend_tokenizer(tok, tmp_path / "tok-ext", tokens=read_token_list(tmp_path / "new.txt"),
                                   train_on=[str(corpus_txt)], num_new=2)
    assert added[:2] == ["zebraquokka", "marsupial"] and set(added[2:]) == {"axolotl", "pangolin"}
    old = load_tokenizer(tok)
    assert info.vocab_size == 324
    for word in added:
        assert info.tokenizer.token_to_id(word) >= 320
    text = "the quick brown fox 7"
    assert info.tokenizer.encode(text).ids == old.tokenizer.encode(text).ids  # old ids unchanged
    assert (info.pad_id, info.cls_id, info.sep_id, info.mask_id) == (old.pad_id, old.cls_id, old.sep_id, old.mask_id)
    enc = info.tokenizer.encode("fox zebraquokka").ids
    assert 320 in enc

    corpus = make_corpus(tmp_path / "corpus", n_train=40, n_val=4)
    loaded = load_run(str(_run_yaml(tmp_path, hf, tmp_path / "tok-ext", corpus)))
    assert loaded.model_cfg.vocab_size == 384  # 324 rounded up to a multiple of 64
    run = build_trainer(loaded)
    model = run.composer_model.model
    emb = model.model.embeddings.tok_embeddings.weight.detach()
    assert emb.shape == (384, 32)
    torch.testing.assert_close(emb[320:], emb[:320].mean(0, keepdim=True).expand(64, -1))
    ids, mask = _padded_batch()
    ours, theirs = _model_logits(model, ids, mask), _hf_logits(hf, ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(ours[keep][:, :320], theirs[keep], rtol=0, atol=1e-5)  # old-token logits unchanged
    run.trainer.close()


def test_tile_from_hf_folder(hf_folder, tmp_path, monkeypatch):
    """init_from: {hf: small folder, tile: true} builds this run's (larger) model from tiled weights."""
    from flexbert.train.builder import build_trainer

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    hf, tok = hf_folder
    corpus = make_corpus(tmp_path / "corpus", n_train=20, n_val=4)
    run = tiny_run(corpus, tmp_path / "run", max_duration="1ba", tokenizer=str(tok), init_from={"hf": str(hf), "tile": True})
    run["model"] = {"preset": "tiny", "vocab_size": 320, "hidden_size": 48, "intermediate_size": 64,
                    "num_hidden_layers": 4, "num_attention_heads": 3, "attn_backend": "eager",
                    "pad_token_id": 3, "cls_token_id": 1, "sep_token_id": 2, "mask_token_id": 4}
    built = build_trainer(load_run(str(write_yaml(tmp_path / "run.yaml", run))))
    W = dict(built.composer_model.model.named_parameters())["model.layers.3.mlp.Wo.weight"].detach()
    src = transformers.ModernBertForMaskedLM.from_pretrained(hf).state_dict()["model.layers.0.mlp.Wo.weight"]
    assert torch.equal(W[8:40, 8:56], src)  # layer 3 <- layer 3 % 3 = 0, center block
    built.trainer.fit()
    built.trainer.close()


def test_extend_tokenizer_cli(hf_folder, tmp_path):
    import subprocess
    import sys

    _, tok = hf_folder
    (tmp_path / "new.txt").write_text("wombat\n")
    script = str(REPO / "data_prep" / "extend_tokenizer.py")
    ok = subprocess.run([sys.executable, script, "--base", str(tok), "--add-tokens", str(tmp_path / "new.txt"),
                         "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "321 ids (1 added)" in ok.stdout and "vocab_size becomes 384" in ok.stdout
    again = subprocess.run([sys.executable, script, "--base", str(tok), "--add-tokens", str(tmp_path / "new.txt"),
                            "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
