"""The packed CPU fast path: fused q/k RoPE and the sdpa kernel's cached gather give the reference results."""
from __future__ import annotations

import pytest
import torch

from flexbert.model.attention import KERNELS, PackedSeqInfo, apply_rope, rope_cos_signed_sin, rope_cos_sin, rotate_half
from flexbert.model.attention.kernels.sdpa import dense_additive_mask, dense_gather_index


def reference_rope(x, cos, sin):
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def test_fused_qk_rope_on_a_qkv_view_equals_rotate_half_bitwise():
    T, N, H = 17, 3, 8
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(T, 3, N, H, generator=gen)
    pos = torch.cat([torch.arange(10), torch.arange(7)])
    seqs = PackedSeqInfo(torch.tensor([0, 10, 17], dtype=torch.int32), 10)
    cos, sin = rope_cos_sin(seqs, pos, H, 10000.0)
    cos2, ssin = rope_cos_signed_sin(seqs, pos, H, 10000.0)
    assert cos2 is cos and rope_cos_signed_sin(seqs, pos, H, 10000.0)[1] is ssin  # cached per theta
    qk = apply_rope(qkv[:, :2], cos, ssin, signed_sin=True)
    assert qk.shape == (T, 2, N, H)
    assert torch.equal(qk[:, 0], reference_rope(qkv[:, 0], cos, sin))
    assert torch.equal(qk[:, 1], reference_rope(qkv[:, 1], cos, sin))
    assert torch.equal(apply_rope(qkv[:, 0], cos, sin), reference_rope(qkv[:, 0], cos, sin))


@pytest.mark.parametrize("window", [None, 2])
def test_sdpa_on_strided_views_with_an_empty_document_matches_eager(window):
    lengths = [5, 0, 9, 1, 3]  # an empty document, in the middle
    N, H = 2, 4
    T = sum(lengths)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    base = torch.randn(T, 3, N, H, generator=torch.Generator().manual_seed(3))
    outs, grads = {}, {}
    for name in ("eager", "sdpa"):
        qkv = base.clone().requires_grad_()
        q, k, v = qkv.unbind(1)  # strided views, as the attention module passes them
        out = KERNELS.get(name)()(q, k, v, PackedSeqInfo(cu, max(lengths)), window, 0.0, 0.5)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs[name], grads[name] = out, qkv.grad
    torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grads["sdpa"], grads["eager"], atol=1e-6, rtol=1e-6)


def test_sdpa_gather_index_and_mask_are_built_once_per_batch():
    lengths = [4, 2, 3]
    cu = torch.tensor([0, 4, 6, 9], dtype=torch.int32)
    seqs = PackedSeqInfo(cu, 4)
    pack_DL, dense_T = dense_gather_index(seqs, torch.device("cpu"))
    assert dense_gather_index(seqs, torch.device("cpu"))[0] is pack_DL
    # Padding slots point at real tokens (in range); real slots hold their own token.
    assert pack_DL.tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 6, 7, 8, 0]
    assert dense_T.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10]
    assert pack_DL[dense_T].tolist() == list(range(sum(lengths)))
    mask = dense_additive_mask(seqs, 1, torch.float32, torch.device("cpu"))
    assert dense_additive_mask(seqs, 1, torch.float32, torch.device("cpu")) is mask
    assert mask.shape == (3, 1, 4, 4) and mask[1, 0, 0].tolist() == [0.0, 0.0, float("-inf"), float("-inf")]
