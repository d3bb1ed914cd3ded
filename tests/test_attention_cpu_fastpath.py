"""The packed CPU fast path: fused q/k RoPE and the sdpa kernel's cached gather give the reference results."""
from __future__ import annotations

import pytest
import torch

from flexbert.model.attention import KERNELS, PackedSeqInfo, apply_rope, rope_cos_signed_sin, rope_cos_sin, rotate_half
from flexbert.model.attention.kernels.sdpa import dense_additive_mask, dense_gather_index


def reference_rope(x, cos, sin):
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def test_fused_qk_rope_on_a_qkv_view_equals_rotate_half():
    """q and k rotated in one call from a strided qkv view; the plain path is bitwise rotate_half, the
    fp32 CPU path (fused multiply-add) within one rounding of it, gradients included."""
    from flexbert.model.attention.rope import _rope_plain

    T, N, H = 17, 3, 8
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(T, 3, N, H, generator=gen)
    pos = torch.cat([torch.arange(10), torch.arange(7)])
    seqs = PackedSeqInfo(torch.tensor([0, 10, 17], dtype=torch.int32), 10)
    cos, sin = rope_cos_sin(seqs, pos, H, 10000.0)
    cos2, ssin = rope_cos_signed_sin(seqs, pos, H, 10000.0)
    assert cos2 is cos and rope_cos_signed_sin(seqs, pos, H, 10000.0)[1] is ssin  # cached per theta
    plain = _rope_plain(qkv[:, :2], cos[:, None, None], ssin[:, None, None])
    assert torch.equal(plain[:, 0], reference_rope(qkv[:, 0], cos, sin))
    assert torch.equal(plain[:, 1], reference_rope(qkv[:, 1], cos, sin))
    leaf = qkv.clone().requires_grad_()
    qk = apply_rope(leaf[:, :2], cos, ssin, signed_sin=True)  # fp32 on CPU: the fused path
    assert qk.shape == (T, 2, N, H)
    torch.testing.assert_close(qk, plain, atol=1e-6, rtol=2e-7)
    torch.testing.assert_close(apply_rope(qkv[:, 0], cos, sin), reference_rope(qkv[:, 0], cos, sin),
                               atol=1e-6, rtol=2e-7)
    g = torch.randn(T, 2, N, H, generator=gen)
    (qk * g).sum().backward()
    ref_leaf = qkv.clone().requires_grad_()
    (reference_rope(ref_leaf[:, :2], cos[:, None], sin[:, None]) * g).sum().backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, atol=1e-6, rtol=2e-7)
    assert not leaf.grad[:, 2].any()


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


@pytest.mark.parametrize("plan, window", [("blocked", 2), ("blocked", 5), ("blocked", 16), ("per_doc", None),
                                          ("dense", None), ("dense", 3)])
@pytest.mark.parametrize("lengths", [[5, 0, 9, 1, 3], [40, 7, 33], [37]])
def test_every_sdpa_layout_matches_eager_with_gradients(plan, window, lengths):
    """Each layout, forced, against the eager reference: documents longer and shorter than the window,
    an empty document, packs whose length is (80) and is not (55, 37) a multiple of the block rows."""
    N, H = 2, 4
    T = sum(lengths)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    base = torch.randn(T, 3, N, H, generator=torch.Generator().manual_seed(5))
    weights = torch.linspace(-1, 1, T * N * H).view(T, N, H)
    outs, grads = {}, {}
    for name in ("eager", "sdpa"):
        qkv = base.clone().requires_grad_()
        q, k, v = qkv.unbind(1)
        seqs = PackedSeqInfo(cu, max(lengths))
        seqs.cache[f"sdpa:plan:{window}"] = plan  # force the layout (sdpa_plan reads its choice from here)
        out = KERNELS.get(name)()(q, k, v, seqs, window, 0.0, 0.5)
        (out * weights).sum().backward()
        outs[name], grads[name] = out, qkv.grad
    assert outs["sdpa"].shape == (T, N, H)
    torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grads["sdpa"], grads["eager"], atol=1e-6, rtol=1e-6)


def test_sdpa_plan_picks_the_cheapest_layout():
    from flexbert.model.attention.kernels.sdpa import MAX_PER_DOC_CALLS, block_rows, sdpa_plan

    def seqs_of(lengths):
        cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
        return PackedSeqInfo(cu, max(lengths))

    assert block_rows(64) == 64 and block_rows(4) == 16 and block_rows(200) == 64
    short = seqs_of([355, 237, 117, 292, 187, 166, 282, 310])  # the model benchmark's batch
    assert sdpa_plan(short, 64) == "blocked" and sdpa_plan(short, None) == "per_doc"
    equal = seqs_of([300] * 4)
    assert sdpa_plan(equal, None) == "dense"  # no padding to save: one call
    assert sdpa_plan(seqs_of([20, 20]), 64) == "dense"  # a window wider than the documents
    many = seqs_of([10] * (MAX_PER_DOC_CALLS + 1) + [50])
    assert sdpa_plan(many, None) == "dense"


@pytest.mark.gpu
@pytest.mark.parametrize("plan, window", [("blocked", 64), ("per_doc", None), ("dense", 64), ("dense", None)])
def test_sdpa_layouts_on_cuda_bf16(plan, window):
    """The sdpa kernel's layouts also run on CUDA (when named there), in bf16, with gradients."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    lengths = [5, 150, 1, 70, 33, 400]
    N, H = 4, 64
    T = sum(lengths)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    base = torch.randn(T, 3, N, H, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(T, N, H, generator=torch.Generator().manual_seed(2))
    results = {}
    for name, device, dtype in (("eager", "cpu", torch.float64), ("sdpa", "cuda", torch.bfloat16)):
        qkv = base.to(device=device, dtype=dtype).requires_grad_()
        seqs = PackedSeqInfo(cu.to(device), max(lengths))
        seqs.cache[f"sdpa:plan:{window}"] = plan
        out = KERNELS.get(name)()(*qkv.unbind(1), seqs, window, 0.0, H ** -0.5)
        (out.float() * weights.to(device)).sum().backward()
        results[name] = (out.double().cpu(), qkv.grad.double().cpu())
    (out_ref, grad_ref), (out, grad) = results["eager"], results["sdpa"]
    assert (out - out_ref).abs().max().item() < 2e-2
    assert (grad - grad_ref).abs().max().item() < 2e-2 * max(1.0, grad_ref.abs().max().item())
