"""FLOPs per token, parameter counts from the config, and the peak FLOP/s table."""
import pytest
import torch

from flexbert.config.model import FlexBertConfig
from flexbert.train.flops import count_params, flops_per_token, peak_flops, precision_key

BASE = dict(vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12)
LARGE = dict(vocab_size=50368, hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16)
TINY = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            global_attn_every_n_layers=2, local_attention=8, pad_token_id=0, cls_token_id=1, sep_token_id=2,
            mask_token_id=3)


@pytest.mark.parametrize("sizes,total", [(BASE, 149_655_232), (LARGE, 395_881_664)])
def test_param_counts_match_modernbert(sizes, total):
    assert count_params(FlexBertConfig(**sizes))["total"] == total


@pytest.mark.parametrize("overrides", [{}, {"mlp": "mlp"}, {"tie_word_embeddings": False},
                                       {"norm_bias": True, "attention_bias": True, "mlp_bias": True,
                                        "classifier_bias": True}])
def test_param_counts_match_the_built_model(overrides):
    from flexbert.model import FlexBertForMaskedLM

    cfg = FlexBertConfig(**{**TINY, **overrides})
    model = FlexBertForMaskedLM(cfg)
    assert count_params(cfg)["total"] == sum(p.numel() for p in model.parameters())


def test_flops_per_token_tiny_by_hand():
    # encoder: 3 layers x (attention 4*32*32 + GLU 32*128 + 64*32 + mlp_norm 32) + attn_norm of
    # layers 1, 2 (2*32) + final norm 32 = 30,912 params.
    # attention at seq_len 16: layers 0 and 2 global (16 keys), layer 1 local (8 + 1 = 9 keys):
    # 12 * 32 * (16 + 9 + 16) = 15,744.
    # head: dense 1024 + norm 32 + decoder 32*256 + bias 256 = 9,504 params, on 30% of tokens.
    cfg = FlexBertConfig(**TINY)
    assert count_params(cfg)["encoder"] == 30_912
    assert flops_per_token(cfg, 16, 0.3) == pytest.approx(6 * 30_912 + 15_744 + 6 * 9_504 * 0.3)
    # short sequences: local layers see no more than the sequence
    assert flops_per_token(cfg, 4, 0.3) == pytest.approx(6 * 30_912 + 12 * 32 * 12 + 6 * 9_504 * 0.3)
    # a dense head runs on every token whatever the masking rate
    dense = FlexBertConfig(**TINY, sparse_prediction=False)
    assert flops_per_token(dense, 16, 0.3) == pytest.approx(6 * 30_912 + 15_744 + 6 * 9_504)


def test_flops_per_token_modernbert_base_is_about_6n():
    # ~6 x 110M encoder params + attention + a 30% head: ~0.92 GFLOP per token at 1024.
    cfg = FlexBertConfig(**BASE)
    enc = count_params(cfg)["encoder"]
    attention = 12 * 768 * (8 * 1024 + 14 * 129)
    head = 768 * 768 + 768 + 768 * 50368 + 50368
    assert flops_per_token(cfg, 1024, 0.3) == pytest.approx(6 * enc + attention + 6 * head * 0.3)


@pytest.mark.parametrize("name,precision,expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("NVIDIA H100 PCIe", "amp_bf16", 756e12),
    ("NVIDIA H200", "bf16", 989e12),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
    ("NVIDIA A100-SXM4-80GB", "fp32", 19.5e12),
    ("NVIDIA L40S", "bf16", 362e12),
    ("NVIDIA L4", "bf16", 121e12),
    ("Tesla V100-SXM2-16GB", "bf16", None),
    ("Some Future GPU", "bf16", None),
])
def test_peak_flops_table(name, precision, expected):
    assert peak_flops(name, precision) == expected


def test_peak_flops_is_none_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peak_flops() is None


def test_precision_key():
    assert precision_key("amp_bf16") == "bf16"
    assert precision_key("amp_fp16") == "fp16"
    assert precision_key("fp32") == "fp32"
