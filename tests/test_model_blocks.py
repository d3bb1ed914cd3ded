"""Every combination of registry variants: shapes, padded == packed, determinism, finite grads.

New variants registered in flexbert.model.registries are picked up here without editing this file.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from flexbert import FlexBertForMaskedLM, FlexBertModel
from flexbert.model.registries import ATTENTIONS, EMBEDDINGS, LAYOUTS, MLPS, NORMS

COMBOS = list(itertools.product(EMBEDDINGS.names(), NORMS.names(), MLPS.names(), LAYOUTS.names(), ATTENTIONS.names()))
LENGTHS = [13, 5, 20]  # documents longer and shorter than the window (|i - j| <= 4)


@pytest.fixture(params=COMBOS, ids=["-".join(c) for c in COMBOS])
def variant(request, make_config):
    embedding, norm, mlp, layout, attention = request.param
    return make_config(embedding=embedding, norm=norm, mlp=mlp, layer_layout=layout, attention=attention,
                       attn_backend="sdpa", max_position_embeddings=64)


def test_variant_contract(variant, make_docs):
    """Shapes; padded == packed; repeatable forward; backward gives finite grads for every parameter."""
    check_variant_contract(variant, make_docs)


def check_variant_contract(variant, make_docs):
    """The body of test_variant_contract, also run on blocks registered by other tests."""
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(variant)
    docs = make_docs(LENGTHS)
    model.eval()
    with torch.no_grad():
        packed_TD = model.model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens, max_seqlen=docs.max_seqlen)
        again_TD = model.model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens, max_seqlen=docs.max_seqlen)
        padded_BSD = model.model(docs.input_ids_BS, attention_mask=docs.attention_mask_BS)
    assert packed_TD.shape == (sum(LENGTHS), variant.hidden_size)
    assert padded_BSD.shape == (len(LENGTHS), max(LENGTHS), variant.hidden_size)
    assert torch.equal(packed_TD, again_TD)
    torch.testing.assert_close(padded_BSD, docs.pad(packed_TD), atol=1e-5, rtol=1e-5)
    assert torch.all(padded_BSD[docs.attention_mask_BS == 0] == 0)  # padding positions are zeros

    model.train()
    labels = torch.where(torch.arange(docs.input_ids_T.numel()) % 3 == 0, docs.input_ids_T, -100)
    out = model(docs.input_ids_T, labels=labels, cu_seqlens=docs.cu_seqlens)
    assert out.logits.shape == (int((labels != -100).sum()), variant.vocab_size)
    out.loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad
    assert model.model.embeddings.tok_embeddings.weight.grad.abs().sum() > 0


def test_same_seed_same_model(make_config, make_docs):
    docs = make_docs(LENGTHS)
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = FlexBertForMaskedLM(make_config()).eval()
        with torch.no_grad():
            outputs.append(model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens).logits)
    assert torch.equal(outputs[0], outputs[1])


def test_weight_names_of_a_prenorm_rope_model(make_config):
    names = set(FlexBertForMaskedLM(make_config(num_hidden_layers=2)).state_dict())
    assert names == {
        "model.embeddings.tok_embeddings.weight", "model.embeddings.norm.weight",
        "model.layers.0.attn.Wqkv.weight", "model.layers.0.attn.Wo.weight", "model.layers.0.mlp_norm.weight",
        "model.layers.0.mlp.Wi.weight", "model.layers.0.mlp.Wo.weight",
        "model.layers.1.attn_norm.weight", "model.layers.1.attn.Wqkv.weight", "model.layers.1.attn.Wo.weight",
        "model.layers.1.mlp_norm.weight", "model.layers.1.mlp.Wi.weight", "model.layers.1.mlp.Wo.weight",
        "model.final_norm.weight", "head.dense.weight", "head.norm.weight", "decoder.weight", "decoder.bias"}


def test_decoder_is_tied_unless_untied(make_config):
    tied = FlexBertForMaskedLM(make_config())
    assert tied.decoder.weight is tied.model.embeddings.tok_embeddings.weight
    untied = FlexBertForMaskedLM(make_config(tie_word_embeddings=False))
    assert untied.decoder.weight is not untied.model.embeddings.tok_embeddings.weight


def test_absolute_positions_longer_than_the_table_fail_clearly(make_config, make_docs):
    model = FlexBertModel(make_config(embedding="absolute", attention="plain", max_position_embeddings=16))
    docs = make_docs([20])
    with pytest.raises(ValueError, match="longer than model.max_position_embeddings 16"):
        model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens)


def test_position_ids_restart_per_document(make_config, make_docs):
    """Packed defaults equal explicit per-document positions; shifting them changes RoPE outputs."""
    # A wide init makes attention sharp, so positions visibly matter.
    model = FlexBertModel(make_config(attn_backend="eager", initializer_range=0.3)).eval()
    docs = make_docs([6, 9])
    pos = torch.cat([torch.arange(6), torch.arange(9)])
    with torch.no_grad():
        default = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens)
        explicit = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens, position_ids=pos)
        shifted = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens, position_ids=pos + 3)
    assert torch.equal(default, explicit)
    # RoPE is relative: shifting all positions of a document leaves attention scores unchanged.
    torch.testing.assert_close(shifted, default, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        scrambled = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens, position_ids=pos.flip(0))
    assert (scrambled - default).abs().max() > 1e-2


def test_bad_input_combinations_say_what_to_pass(make_config, make_docs):
    model = FlexBertModel(make_config())
    docs = make_docs([4, 4])
    with pytest.raises(ValueError, match="padded .* takes attention_mask"):
        model(docs.input_ids_BS, cu_seqlens=docs.cu_seqlens)
    with pytest.raises(ValueError, match="packed .* takes cu_seqlens"):
        model(docs.input_ids_T, attention_mask=docs.attention_mask_BS)
    with pytest.raises(ValueError, match="end at T=8"):
        model(docs.input_ids_T, cu_seqlens=torch.tensor([0, 4, 7], dtype=torch.int32))
