"""Shared builders for the export tests (no tests here): tiny configs, random weights, padded batches."""
from __future__ import annotations

import dataclasses

import torch

PAD, CLS, SEP, MASK = 0, 1, 2, 3
TOL = 1e-5


def tiny_config(**overrides):
    """A tiny FlexBERT config with HF-representable defaults (d 32, 3 layers, vocab 101)."""
    from flexbert.config.model import FlexBertConfig

    base = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                global_attn_every_n_layers=2, local_attention=8, global_rope_theta=160000.0, local_rope_theta=10000.0,
                max_position_embeddings=128, pad_token_id=PAD, cls_token_id=CLS, sep_token_id=SEP, mask_token_id=MASK,
                attn_backend="sdpa")
    base.update(overrides)
    return FlexBertConfig(**base)


def random_model(cfg, seed: int = 0):
    """FlexBertForMaskedLM with random init, then every tensor perturbed.

    Norm weights (1) and biases (0) are perturbed too, so a bias that is dropped or a norm
    weight that is swapped on export changes the outputs and fails the comparison.
    """
    from flexbert.model import FlexBertForMaskedLM

    torch.manual_seed(seed)
    model = FlexBertForMaskedLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def perturb_(model, seed: int = 0):
    """Perturb every parameter of any module in place (used on HF models too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def padded_batch(vocab: int, lengths: list[int], seed: int = 0):
    """Right-padded (input_ids, attention_mask) with [CLS] ... [SEP] documents of `lengths`."""
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    ids = torch.full((len(lengths), S), PAD, dtype=torch.long)
    mask = torch.zeros((len(lengths), S), dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(4, vocab, (n,), generator=g)
        ids[b, 0], ids[b, n - 1] = CLS, SEP
        ids[b, n // 2] = MASK
        mask[b, :n] = 1
    return ids, mask


def max_diff_real(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Max |a - b| over non-pad positions only (pad positions legitimately differ)."""
    keep = mask.bool()
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a[keep] - b[keep]).abs().max().item()


def hf_logits(out_dir, ids, mask, attn_implementation: str) -> torch.Tensor:
    from transformers import AutoModelForMaskedLM

    hf = AutoModelForMaskedLM.from_pretrained(str(out_dir), attn_implementation=attn_implementation).eval()
    assert hf.config._attn_implementation == attn_implementation
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask).logits


def flex_logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def replace(cfg, **kw):
    return dataclasses.replace(cfg, **kw)
