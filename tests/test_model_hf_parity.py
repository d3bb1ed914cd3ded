"""Numerical parity with transformers' ModernBERT on a random tiny model (nothing downloaded).

Our state_dict loads into HF's ModernBertForMaskedLM unchanged (same names), so equal outputs
check RoPE, windows, GeGLU, norms and the head together. Only non-pad positions are compared.
"""
from __future__ import annotations

import pytest
import torch

from flexbert import FlexBertForMaskedLM

transformers = pytest.importorskip("transformers")


def hf_twin(config, attn_implementation):
    hf_config = transformers.ModernBertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        global_attn_every_n_layers=config.global_attn_every_n_layers, local_attention=config.local_attention,
        global_rope_theta=config.global_rope_theta, local_rope_theta=config.local_rope_theta,
        norm_eps=config.norm_eps, hidden_activation=config.hidden_activation,
        pad_token_id=config.pad_token_id, cls_token_id=config.cls_token_id, sep_token_id=config.sep_token_id,
        bos_token_id=config.cls_token_id, eos_token_id=config.sep_token_id,
        attention_dropout=0.0, embedding_dropout=0.0, mlp_dropout=0.0, sparse_prediction=False,
        reference_compile=False, attn_implementation=attn_implementation)
    return transformers.ModernBertForMaskedLM(hf_config).eval()


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_equal_hf_modernbert(make_config, make_docs, attn_implementation):
    config = make_config(global_rope_theta=500.0, local_rope_theta=50.0, initializer_range=0.2,
                         sparse_prediction=False)
    torch.manual_seed(0)
    ours = FlexBertForMaskedLM(config).eval()
    theirs = hf_twin(config, attn_implementation)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=True)
    assert not missing and not unexpected
    docs = make_docs([19, 7, 13], seed=5)
    with torch.no_grad():
        ours_logits = ours(docs.input_ids_BS, attention_mask=docs.attention_mask_BS).logits
        hf_logits = theirs(input_ids=docs.input_ids_BS, attention_mask=docs.attention_mask_BS).logits
    real = docs.attention_mask_BS.bool()
    torch.testing.assert_close(ours_logits[real], hf_logits[real], atol=1e-4, rtol=1e-4)
