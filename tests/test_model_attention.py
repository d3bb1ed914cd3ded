"""Attention: kernels agree with a brute-force definition, windows are exact, documents never mix."""
from __future__ import annotations

import logging

import pytest
import torch

from flexbert import FlexBertModel
from flexbert.config.model import LayerSpec
from flexbert.model.attention import KERNELS, PackedSeqInfo, RopeAttention

LENGTHS = [23, 7, 31, 1, 12]  # several documents, most longer than the windows used below
CPU = torch.device("cpu")
# Every registered kernel that runs here is checked against one reference (brute_force_attention):
# a new kernel is picked up by registering it.
CPU_KERNELS = [n for n in KERNELS.names() if KERNELS.get(n)().unavailable_reason(CPU, torch.float32, head_dim=8) is None]
CPU_TRAINING_KERNELS = [n for n in CPU_KERNELS if KERNELS.get(n)().backward_unavailable_reason(CPU, torch.float32) is None]


def random_qkv(lengths, heads=3, head_dim=8, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    q, k, v = (torch.randn(T, heads, head_dim, generator=gen, dtype=dtype) for _ in range(3))
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return q, k, v, cu


def brute_force_attention(q, k, v, cu, window, scale):
    """softmax over keys j allowed for query i, spelled out with a per-pair rule."""
    doc, pos = [], []
    for d, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        doc += [d] * (b - a)
        pos += list(range(b - a))
    T = len(doc)
    allowed = torch.tensor([[doc[i] == doc[j] and (window is None or abs(pos[i] - pos[j]) <= window)
                             for j in range(T)] for i in range(T)])
    scores = torch.einsum("inh,jnh->nij", q.double(), k.double()) * scale
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("nij,jnh->inh", probs, v.double()).to(q.dtype)


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@pytest.mark.parametrize("window", [None, 1, 4, 64])
def test_kernel_matches_brute_force(kernel_name, window):
    q, k, v, cu = random_qkv(LENGTHS)
    kernel = KERNELS.get(kernel_name)()
    out = kernel(q, k, v, PackedSeqInfo(cu, max(LENGTHS)), window, 0.0, 8 ** -0.5)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, brute_force_attention(q, k, v, cu, window, 8 ** -0.5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_name", CPU_TRAINING_KERNELS)
@pytest.mark.parametrize("window", [None, 3])
def test_kernel_gradients_match_brute_force(kernel_name, window):
    q, k, v, cu = random_qkv(LENGTHS, seed=1)
    grads = {}
    for name in ("reference", kernel_name):
        qkv = [t.clone().requires_grad_() for t in (q, k, v)]
        if name == "reference":
            out = brute_force_attention(*qkv, cu, window, 0.3)
        else:
            out = KERNELS.get(name)()(*qkv, PackedSeqInfo(cu, max(LENGTHS)), window, 0.0, 0.3)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[name] = [t.grad for t in qkv]
    for got, want in zip(grads[kernel_name], grads["reference"]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_name", CPU_TRAINING_KERNELS)
def test_window_sees_distance_w_but_not_w_plus_1(make_config, kernel_name):
    """Gradient of a local layer's output at query i w.r.t. its input is non-zero exactly for |i - j| <= w."""
    config = make_config(local_attention=8, initializer_range=0.2)
    w = config.window
    torch.manual_seed(0)
    attn = RopeAttention(config, LayerSpec("local", w, config.local_rope_theta))
    L, i = 20, 10
    x = torch.randn(L, config.hidden_size, requires_grad=True)
    seqs = PackedSeqInfo(torch.tensor([0, L], dtype=torch.int32), L)
    out = attn(x, seqs, torch.arange(L), KERNELS.get(kernel_name)())
    out[i].sum().backward()
    seen = (x.grad.abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert w == 4 and seen == list(range(i - w, i + w + 1))


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
def test_no_attention_across_documents(make_config, make_docs, kernel_name):
    """Changing every token of document 2 leaves documents 1 and 3 bit-for-bit unchanged."""
    config = make_config(attn_backend=kernel_name, initializer_range=0.2)
    torch.manual_seed(0)
    model = FlexBertModel(config).eval()
    docs = make_docs([11, 17, 9])
    changed = docs.input_ids_T.clone()
    changed[11:28] = (changed[11:28] + 7) % config.vocab_size
    with torch.no_grad():
        a = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens)
        b = model(changed, cu_seqlens=docs.cu_seqlens)
    assert torch.equal(a[:11], b[:11]) and torch.equal(a[28:], b[28:])
    assert not torch.allclose(a[11:28], b[11:28])


def test_model_backends_agree_on_packed_documents(make_config, make_docs):
    """Eager and sdpa give the same hidden states (global and local layers, docs longer than the window)."""
    docs = make_docs([30, 9, 21, 2], seed=3)
    outputs = {}
    for name in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = FlexBertModel(make_config(attn_backend=name, initializer_range=0.2)).eval()
        with torch.no_grad():
            outputs[name] = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens, max_seqlen=docs.max_seqlen)
    assert {s.kind for s in model.config.layer_types()} == {"global", "local"}
    torch.testing.assert_close(outputs["sdpa"], outputs["eager"], atol=1e-5, rtol=1e-5)


def test_flex_model_on_cpu_infers_like_eager_and_refuses_only_backward(make_config, make_docs):
    """flex on CPU: eval forward (with or without no_grad, padded input too) equals eager; training
    backward either matches eager or fails with the kernel's declared reason, never silently."""
    flex_kernel = KERNELS.get("flex")()
    if (why := flex_kernel.unavailable_reason(torch.device("cpu"), torch.float32)) is not None:
        pytest.skip(f"flex: {why}")
    docs = make_docs([30, 9, 21, 2], seed=3)
    models = {}
    for name in ("eager", "flex"):
        torch.manual_seed(0)
        models[name] = FlexBertModel(make_config(attn_backend=name, initializer_range=0.2)).eval()
    packed = dict(cu_seqlens=docs.cu_seqlens, max_seqlen=docs.max_seqlen)
    with torch.no_grad():
        want = models["eager"](docs.input_ids_T, **packed)
        torch.testing.assert_close(models["flex"](docs.input_ids_T, **packed), want, atol=1e-5, rtol=1e-5)
        padded = models["flex"](docs.input_ids_BS, attention_mask=docs.attention_mask_BS)
    torch.testing.assert_close(padded, docs.pad(want), atol=1e-5, rtol=1e-5)
    with_grad = models["flex"](docs.input_ids_T, **packed)  # eval without no_grad: still a forward
    torch.testing.assert_close(with_grad.detach(), want, atol=1e-5, rtol=1e-5)

    backward_why = flex_kernel.backward_unavailable_reason(torch.device("cpu"), torch.float32)
    if backward_why is None:
        with_grad.sum().backward()
        models["eager"](docs.input_ids_T, **packed).sum().backward()
        for (n, p_flex), p_eager in zip(models["flex"].named_parameters(), models["eager"].parameters()):
            torch.testing.assert_close(p_flex.grad, p_eager.grad, atol=1e-4, rtol=1e-4, msg=n)
    else:
        with pytest.raises(RuntimeError, match="attention kernel 'flex': FlexAttention has no backward on CPU"):
            with_grad.sum().backward()


def test_auto_resolves_once_per_device_and_dtype(make_config, make_docs, caplog):
    model = FlexBertModel(make_config())
    docs = make_docs([5, 6])
    with caplog.at_level(logging.INFO, logger="flexbert.model.attention.kernels"):
        model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens)
        model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens)
    assert [r.getMessage() for r in caplog.records] == ["attention kernel: sdpa"]
    assert model.attention_kernel(torch.device("cpu"), torch.float32).name == "sdpa"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens)
    assert torch.isfinite(out.float()).all()
    assert sorted(str(k[2]) for k in model._kernels) == ["torch.bfloat16", "torch.float32"]


def test_attention_dropout_is_active_only_in_training(make_config, make_docs):
    model = FlexBertModel(make_config(attention_dropout=0.5, attn_backend="eager"))
    docs = make_docs([12])
    with torch.no_grad():
        model.train()
        t1, t2 = (model(docs.input_ids_T) for _ in range(2))
        model.eval()
        e1, e2 = (model(docs.input_ids_T) for _ in range(2))
    assert not torch.equal(t1, t2) and torch.equal(e1, e2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_moved_to_cuda_resolves_a_cuda_kernel_and_matches_eager(make_config, make_docs):
    """A model built on CPU picks its CUDA kernel on the first CUDA forward; bf16 autocast matches fp32 eager."""
    torch.manual_seed(0)
    model = FlexBertModel(make_config(initializer_range=0.2)).eval()
    docs = make_docs([40, 9, 33])
    with torch.no_grad():
        reference = model(docs.input_ids_T, cu_seqlens=docs.cu_seqlens).cuda()
        model.cuda()
        ids, cu = docs.input_ids_T.cuda(), docs.cu_seqlens.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model(ids, cu_seqlens=cu, max_seqlen=docs.max_seqlen)
    kernel = model.attention_kernel(torch.device("cuda"), torch.bfloat16)
    assert kernel.name in {"flash_attn", "torch_flash", "flex", "sdpa"}
    torch.testing.assert_close(fast.float(), reference, atol=5e-2, rtol=5e-2)
