"""Exact parity between FlexBERT and transformers' ModernBertForMaskedLM, both directions.

Each case builds a random (perturbed) model, writes an HF folder and compares logits on a
padded batch of mixed lengths longer than the local window, at non-pad positions only.
"""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from test_export_helpers import (  # noqa: E402
    CLS, MASK, PAD, SEP, TOL, flex_logits, hf_logits, max_diff_real, padded_batch, perturb_, random_model, tiny_config,
)

# (name, overrides): odd layer counts, small vocabs, windows 4..32, periods 1..4, thetas,
# all four activations (silu = SwiGLU), biases on and off, norm_bias, untied decoder.
CASES = [
    ("gelu_w4_p2", dict(num_hidden_layers=3, local_attention=4, global_attn_every_n_layers=2)),
    ("silu_biases_w8_p3", dict(num_hidden_layers=5, local_attention=8, global_attn_every_n_layers=3,
                               hidden_activation="silu", attention_bias=True, mlp_bias=True, norm_bias=True,
                               classifier_bias=True, global_rope_theta=1000.0, local_rope_theta=500.0)),
    ("gelu_tanh_p1_untied_nodecbias", dict(num_hidden_layers=2, local_attention=32, global_attn_every_n_layers=1,
                                           hidden_activation="gelu_tanh", decoder_bias=False,
                                           tie_word_embeddings=False)),
    ("relu_d64_w16_p4", dict(vocab_size=257, hidden_size=64, num_attention_heads=4, intermediate_size=80,
                             num_hidden_layers=4, local_attention=16, global_attn_every_n_layers=4,
                             hidden_activation="relu", classifier_activation="silu", norm_eps=1e-6)),
    ("gelu_w32_p2_untied_allbias", dict(vocab_size=499, num_hidden_layers=3, local_attention=32,
                                        global_attn_every_n_layers=2, attention_bias=True, mlp_bias=True,
                                        norm_bias=True, classifier_bias=True, tie_word_embeddings=False,
                                        classifier_activation="gelu_tanh", local_rope_theta=160000.0)),
]
LENGTHS = [70, 53, 9, 38]  # longest > 2x the widest window; one shorter than the narrowest


@pytest.mark.parametrize("name,overrides", CASES, ids=[c[0] for c in CASES])
def test_export_matches_hf(tmp_path, name, overrides):
    from flexbert.export import save_hf

    cfg = tiny_config(**overrides)
    model = random_model(cfg, seed=len(name))
    out = tmp_path / "hf"
    save_hf(model, out)
    ids, mask = padded_batch(cfg.vocab_size, LENGTHS, seed=1)
    ours = flex_logits(model, ids, mask)
    for impl in ("eager", "sdpa"):
        theirs = hf_logits(out, ids, mask, impl)
        assert max_diff_real(ours, theirs, mask) <= TOL, (name, impl)


def test_config_json_is_explicit(tmp_path):
    """Every field HF reads is written (no reliance on HF defaults); dropouts are 0.0."""
    from flexbert.export import save_hf

    cfg = tiny_config(local_rope_theta=160000.0, attention_dropout=0.1, attn_out_dropout=0.1, mlp_dropout=0.1,
                      embedding_dropout=0.1)
    save_hf(random_model(cfg), tmp_path / "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "global_attn_every_n_layers", "local_attention", "global_rope_theta", "local_rope_theta",
                "norm_eps", "norm_bias", "attention_bias", "mlp_bias", "classifier_bias", "decoder_bias",
                "hidden_activation", "classifier_activation", "tie_word_embeddings", "max_position_embeddings",
                "pad_token_id", "bos_token_id", "cls_token_id", "eos_token_id", "sep_token_id",
                "initializer_range", "initializer_cutoff_factor", "classifier_pooling", "transformers_version",
                "layer_types", "rope_parameters"):
        assert key in written, key
    assert written["model_type"] == "modernbert" and written["architectures"] == ["ModernBertForMaskedLM"]
    assert written["local_rope_theta"] == 160000.0
    assert written["rope_parameters"]["sliding_attention"] == {"rope_type": "default", "rope_theta": 160000.0}
    assert written["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]  # period 2
    assert (written["pad_token_id"], written["cls_token_id"], written["sep_token_id"]) == (PAD, CLS, SEP)
    assert written["bos_token_id"] == CLS and written["eos_token_id"] == SEP
    for key in ("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"):
        assert written[key] == 0.0, key


def test_tied_decoder_saved_like_hf(tmp_path):
    """Tied: decoder.weight omitted (HF re-ties it), decoder.bias always present."""
    from safetensors import safe_open

    from flexbert.export import save_hf

    save_hf(random_model(tiny_config()), tmp_path / "hf")
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "decoder.weight" not in keys and "decoder.bias" in keys
    assert "model.layers.0.attn_norm.weight" not in keys and "model.layers.1.attn_norm.weight" in keys


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("safe", [True, False])
def test_import_hf_model(tmp_path, tied, safe):
    """Random transformers ModernBertForMaskedLM -> save_pretrained -> load_hf: same logits."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    from flexbert.export import load_hf

    torch.manual_seed(0)
    hf_cfg = ModernBertConfig(vocab_size=211, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=3, global_attn_every_n_layers=2, local_attention=10,
                              global_rope_theta=20000.0, local_rope_theta=3000.0, norm_bias=True, mlp_bias=True,
                              pad_token_id=PAD, bos_token_id=CLS, cls_token_id=CLS, eos_token_id=SEP,
                              sep_token_id=SEP, max_position_embeddings=256, tie_word_embeddings=tied,
                              attn_implementation="eager")
    hf = perturb_(ModernBertForMaskedLM(hf_cfg), seed=3).eval()
    hf.save_pretrained(str(tmp_path / "hf"), safe_serialization=safe)
    model = load_hf(tmp_path / "hf", mask_token_id=MASK).eval()
    assert model.config.tie_word_embeddings == tied and model.config.mask_token_id == MASK
    ids, mask = padded_batch(211, LENGTHS, seed=2)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    assert max_diff_real(flex_logits(model, ids, mask), theirs, mask) <= TOL


def test_round_trip_identical_state_dict(tmp_path):
    from flexbert.export import load_hf, save_hf

    for i, (_, overrides) in enumerate(CASES[:3]):
        model = random_model(tiny_config(**overrides), seed=i)
        save_hf(model, tmp_path / f"hf{i}")
        back = load_hf(tmp_path / f"hf{i}")
        a, b = model.state_dict(), back.state_dict()
        assert set(a) == set(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k
        for key in ("hidden_activation", "classifier_activation", "local_attention", "global_attn_every_n_layers",
                    "global_rope_theta", "local_rope_theta", "tie_word_embeddings", "decoder_bias", "mask_token_id"):
            assert getattr(back.config, key) == getattr(model.config, key), key


def test_bf16_export(tmp_path):
    from safetensors import safe_open

    from flexbert.export import save_hf

    save_hf(random_model(tiny_config()), tmp_path / "hf", dtype=torch.bfloat16)
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
