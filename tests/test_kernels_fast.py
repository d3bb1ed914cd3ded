"""The fast packed-attention kernels (flex, torch_flash, flash_attn) against a dense reference.

Shape legend: T packed tokens, N heads, H head dim, D documents.

On CPU: flex runs eagerly (fp32, 1e-5): forward always, backward where this torch has
FlexAttention backward on CPU (recent torch refuses it: skipped with the kernel's own
reason, and the refusal itself is tested); its block mask is checked tile by tile against
torch's create_block_mask, torch_flash's aten wiring runs on meta tensors (checked
against the op schemas) and flash_attn's call is checked through a stand-in module.
GPU tests (marker `gpu`) compare all three in bf16, with backward, skipped with each
kernel's own reason where it cannot run.
"""
from __future__ import annotations

import sys
import types

import pytest
import torch

from flexbert.config.strict import ConfigError
from flexbert.model.attention.kernels import KERNELS, PackedSeqInfo, resolve_kernel

# Every kernel but the two CPU references (eager, sdpa), each checked against the fp64 reference.
FAST = tuple(n for n in KERNELS.names() if n not in ("eager", "sdpa"))
# Lengths: one longer than every window, some short, a 1-token doc; T = 259 (not a multiple of 128).
LENGTHS = (5, 150, 1, 70, 33)
WINDOWS = (None, 0, 3, 64)


def make_seqs(lengths, device="cpu") -> PackedSeqInfo:
    """Packed-batch boundaries for documents of the given lengths."""
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return PackedSeqInfo(cu_seqlens=cu.to(device), max_seqlen=max(lengths))


def make_qkv(total, heads=2, head_dim=16, dtype=torch.float32, device="cpu", seed=0):
    """Random (T, N, H) q, k, v leaf tensors that require grad."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(total, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
            .requires_grad_() for _ in range(3)]


def reference(q_TNH, k_TNH, v_TNH, lengths, window, scale):
    """Dense per-document attention in float64 with an explicit |i - j| <= window mask."""
    outs, start = [], 0
    for n in lengths:
        q, k, v = (x[start:start + n].double().transpose(0, 1) for x in (q_TNH, k_TNH, v_TNH))
        scores_NSS = q @ k.transpose(-1, -2) * scale
        if window is not None:
            pos = torch.arange(n, device=q.device)
            far = (pos[:, None] - pos[None, :]).abs() > window
            scores_NSS = scores_NSS.masked_fill(far, float("-inf"))
        outs.append((scores_NSS.softmax(-1) @ v).transpose(0, 1))
        start += n
    return torch.cat(outs)


def grads(out, q, k, v, seed=1):
    """Gradients of <out, fixed random weights> with respect to q, k, v."""
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device, out.dtype)
    return torch.autograd.grad((out * weight).sum(), (q, k, v))


def test_fast_kernels_registered():
    assert set(FAST) <= set(KERNELS.names())
    for name in FAST:
        assert KERNELS.get(name).name == name


# ---------------------------------------------------------------- flex on CPU
def _flex():
    kernel = KERNELS.get("flex")()
    why = kernel.unavailable_reason(torch.device("cpu"), torch.float32)
    if why is not None:
        pytest.skip(f"flex: {why}")
    return kernel


def _flex_backward_reason() -> str | None:
    return KERNELS.get("flex")().backward_unavailable_reason(torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("lengths", (LENGTHS, (4, 0, 130)), ids=("5docs", "empty_doc"))
@pytest.mark.parametrize("window", WINDOWS)
def test_flex_cpu_forward_matches_reference(window, lengths):
    # q, k, v require grad and grad mode is on (as in eval without no_grad): forward must work
    # whether or not this torch has FlexAttention backward on CPU.
    kernel = _flex()
    seqs = make_seqs(lengths)
    q, k, v = make_qkv(sum(lengths))
    scale = 16 ** -0.5
    out = kernel(q, k, v, seqs, window, 0.0, scale)
    ref = reference(q, k, v, lengths, window, scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out.double() - ref).abs().max().item() < 1e-5
    with torch.no_grad():  # inference: the same numbers
        assert torch.equal(kernel(q, k, v, seqs, window, 0.0, scale), out.detach())


@pytest.mark.parametrize("lengths", (LENGTHS, (4, 0, 130)), ids=("5docs", "empty_doc"))
@pytest.mark.parametrize("window", WINDOWS)
def test_flex_cpu_backward_matches_reference(window, lengths):
    kernel = _flex()
    why = _flex_backward_reason()
    if why is not None:
        pytest.skip(f"flex backward on CPU: {why}")
    seqs = make_seqs(lengths)
    q, k, v = make_qkv(sum(lengths))
    scale = 16 ** -0.5
    out = kernel(q, k, v, seqs, window, 0.0, scale)
    ref = reference(q, k, v, lengths, window, scale)
    for got, want in zip(grads(out, q, k, v), grads(ref, q, k, v)):
        assert (got.double() - want).abs().max().item() < 1e-5


def test_flex_cpu_backward_declaration_matches_torch():
    # The declaration comes from a probe; check it against a real backward through the kernel.
    kernel = _flex()
    why = _flex_backward_reason()
    q, k, v = make_qkv(sum(LENGTHS))
    out = kernel(q, k, v, make_seqs(LENGTHS), 3, 0.0, 0.25)
    if why is None:
        assert all(torch.isfinite(g).all() for g in grads(out, q, k, v))
        resolve_kernel("flex", torch.device("cpu"), torch.float32, needs_backward=True)
        return
    assert "no backward on CPU" in why and torch.__version__ in why and "sdpa" in why  # says what to do
    from torch.nn.attention.flex_attention import flex_attention

    x = torch.zeros(1, 2, 32, 16, requires_grad=True)
    with pytest.raises(NotImplementedError):  # torch itself refuses: the declaration is true
        flex_attention(x, x, x).sum().backward()
    with pytest.raises(RuntimeError) as err:
        out.sum().backward()
    assert str(err.value) == f"attention kernel 'flex': {why}"
    with pytest.raises(ConfigError) as err:
        resolve_kernel("flex", torch.device("cpu"), torch.float32, needs_backward=True)
    assert f"attention kernel 'flex' at model.attn_backend cannot train on cpu torch.float32: {why}" == str(err.value)
    assert resolve_kernel("flex", torch.device("cpu"), torch.float32).name == "flex"  # inference is fine


def test_only_flex_declares_a_backward_limit_and_only_on_cpu():
    kernel = KERNELS.get("flex")()
    assert kernel.backward_unavailable_reason(torch.device("cuda"), torch.bfloat16) is None
    for name in set(KERNELS.names()) - {"flex"}:  # every other kernel trains wherever it runs
        assert KERNELS.get(name)().backward_unavailable_reason(torch.device("cpu"), torch.float32) is None
    # so `auto` (which the trainer does not re-check) always picks a kernel that trains on CPU
    assert resolve_kernel("auto", torch.device("cpu"), torch.float32, needs_backward=True).name == "sdpa"


def test_flex_window_is_inclusive_half_width():
    # One document of 3 tokens, window 1: token 0 must ignore token 2 but see token 1.
    kernel = _flex()
    seqs = make_seqs((3,))
    q = torch.zeros(3, 1, 16)  # uniform attention over whatever is visible
    v = torch.arange(3.0).view(3, 1, 1).expand(3, 1, 16).contiguous()
    out = kernel(q, q, v, seqs, 1, 0.0, 1.0)[:, 0, 0]
    assert torch.allclose(out, torch.tensor([0.5, 1.0, 1.5]))


def test_flex_block_mask_cached_per_window():
    kernel = _flex()
    seqs = make_seqs(LENGTHS)
    q, k, v = make_qkv(sum(LENGTHS))
    kernel(q, k, v, seqs, 64, 0.0, 0.25)
    assert len(seqs.cache) == 1
    (first,) = seqs.cache.values()
    kernel(q, k, v, seqs, 64, 0.0, 0.25)  # a second layer with the same window
    assert len(seqs.cache) == 1 and next(iter(seqs.cache.values())) is first
    kernel(q, k, v, seqs, None, 0.0, 0.25)  # a global layer gets its own mask
    assert len(seqs.cache) == 2
    masks = [entry[0] for entry in seqs.cache.values()]
    assert masks[0] is not masks[1]


def _tiles(block_mask):
    """(any tile, full tile) as dense (Q, K) bool tensors of a (1, 1, P, P) BlockMask."""
    def dense(num, idx):
        rows = idx.shape[-2]
        out = torch.zeros(rows, idx.shape[-1], dtype=torch.bool)
        for r in range(rows):
            out[r, idx[0, 0, r, : num[0, 0, r]].long()] = True
        return out

    full = dense(block_mask.full_kv_num_blocks, block_mask.full_kv_indices)
    return dense(block_mask.kv_num_blocks, block_mask.kv_indices) | full, full


@pytest.mark.parametrize("window", (None, 0, 64, 200))
def test_flex_block_mask_tiles_match_torch(window):
    pytest.importorskip("torch.nn.attention.flex_attention")
    from torch.nn.attention.flex_attention import create_block_mask

    from flexbert.model.attention.kernels.flex import build_block_mask, document_ids

    lengths = (300, 5, 1, 200, 130, 60)  # docs spanning several 128-blocks, T = 696
    seqs = make_seqs(lengths)
    padded = 768
    doc = document_ids(seqs.cu_seqlens, padded, torch.device("cpu"))
    assert doc[695].item() == 5 and doc[696].item() == 6  # padding gets its own document

    def rule(b, h, i, j):
        near = (i - j).abs() <= window if window is not None else i >= 0
        return (doc[i] == doc[j]) & near

    ours_any, ours_full = _tiles(build_block_mask(seqs.cu_seqlens, padded, window, torch.device("cpu")))
    want_any, want_full = _tiles(create_block_mask(rule, None, None, padded, padded, device="cpu"))
    assert torch.equal(ours_full, want_full)  # full tiles skip the element rule: must be exact
    assert bool((ours_any >= want_any).all())  # never drop a tile with a visible pair
    assert ours_any.sum() <= want_any.sum() + 2  # and stay (nearly) as sparse as torch's


def test_flex_rejects_dropout():
    kernel = _flex()
    assert kernel.supports_dropout is False
    q, k, v = make_qkv(8)
    with pytest.raises(ValueError, match="dropout"):
        kernel(q, k, v, make_seqs((8,)), None, 0.1, 0.25)


# ---------------------------------------------------------------- availability on CPU
def test_cuda_only_kernels_explain_why_not_on_cpu():
    cpu = torch.device("cpu")
    assert KERNELS.get("torch_flash")().unavailable_reason(cpu, torch.bfloat16) == "needs CUDA"
    why = KERNELS.get("flash_attn")().unavailable_reason(cpu, torch.bfloat16)
    assert why in ("flash-attn not installed", "needs CUDA")


def test_flash_attn_blocked_reports_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # as if it were not installed
    why = KERNELS.get("flash_attn")().unavailable_reason(torch.device("cuda"), torch.bfloat16)
    assert why == "flash-attn not installed"
    with pytest.raises(ConfigError, match="flash-attn not installed"):
        resolve_kernel("flash_attn", torch.device("cuda"), torch.bfloat16)


def test_resolve_named_fast_kernel_on_cpu_is_an_error_with_reason():
    why = KERNELS.get("flash_attn")().unavailable_reason(torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ConfigError) as err:
        resolve_kernel("flash_attn", torch.device("cpu"), torch.bfloat16)
    assert why in str(err.value) and "flash_attn" in str(err.value)
    with pytest.raises(ConfigError, match="needs CUDA"):
        resolve_kernel("torch_flash", torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ConfigError, match="dropout"):
        resolve_kernel("flex", torch.device("cpu"), torch.float32, needs_dropout=True)


def test_auto_on_cpu_picks_sdpa():
    if "sdpa" not in KERNELS:
        pytest.skip("sdpa kernel not built yet")
    assert resolve_kernel("auto", torch.device("cpu"), torch.float32).name == "sdpa"


# ---------------------------------------------------------------- call wiring without a GPU
def test_torch_flash_aten_wiring_on_meta_tensors():
    # Meta tensors run aten's shape functions: argument order, the head-dim padding
    # and the saved-for-backward tensors are exercised against the real op schemas.
    from flexbert.model.attention.kernels import torch_flash

    if not torch_flash._has_aten_varlen():
        pytest.skip("torch has no varlen aten flash ops")
    seqs = make_seqs((7, 13), device="meta")
    q, k, v = (torch.empty(20, 3, 20, device="meta", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))  # head dim 20: padded to 24 inside
    out = KERNELS.get("torch_flash")()(q, k, v, seqs, 4, 0.1, 0.2)
    assert out.shape == (20, 3, 20) and out.device.type == "meta"
    out.sum().backward()
    assert q.grad.shape == k.grad.shape == v.grad.shape == (20, 3, 20)


def test_flash_attn_call_wiring(monkeypatch):
    # A stand-in flash_attn module records the call and answers with the reference.
    calls = []

    def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None,
                    causal=False, window_size=(-1, -1)):
        calls.append(dict(cu=cu_q, same_cu=cu_k is cu_q, max=(max_q, max_k), p=dropout_p,
                          scale=softmax_scale, causal=causal, window=window_size))
        left = None if window_size == (-1, -1) else window_size[0]
        lengths = (cu_q[1:] - cu_q[:-1]).tolist()
        return reference(q, k, v, lengths, left, softmax_scale).to(q.dtype)

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=fake_varlen))
    seqs = make_seqs(LENGTHS)
    q, k, v = make_qkv(sum(LENGTHS))
    kernel = KERNELS.get("flash_attn")()
    out = kernel(q, k, v, seqs, 64, 0.0, 0.25)
    kernel(q, k, v, seqs, None, 0.1, 0.25)
    assert (out.double() - reference(q, k, v, LENGTHS, 64, 0.25)).abs().max().item() < 1e-6
    assert calls[0]["window"] == (64, 64) and calls[1]["window"] == (-1, -1)
    assert calls[0]["cu"].dtype == torch.int32 and calls[0]["same_cu"]
    assert calls[0]["max"] == (150, 150) and calls[0]["scale"] == 0.25
    assert calls[0]["causal"] is False and calls[1]["p"] == 0.1


# ---------------------------------------------------------------- GPU
def _cuda_kernel(name):
    kernel = KERNELS.get(name)()
    why = kernel.unavailable_reason(torch.device("cuda"), torch.bfloat16)
    if why is not None:
        pytest.skip(f"{name}: {why}")
    return kernel


@pytest.mark.gpu
@pytest.mark.parametrize("window", (None, 0, 3, 64))
@pytest.mark.parametrize("name", FAST)
def test_gpu_kernel_matches_reference_bf16(name, window):
    kernel = _cuda_kernel(name)
    lengths = (5, 150, 1, 70, 33, 400)
    seqs = make_seqs(lengths, device="cuda")
    q, k, v = make_qkv(sum(lengths), heads=4, head_dim=64, dtype=torch.bfloat16, device="cuda")
    scale = 64 ** -0.5
    out = kernel(q, k, v, seqs, window, 0.0, scale)
    ref = reference(q, k, v, lengths, window, scale)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max().item() < 2e-2
    for got, want in zip(grads(out, q, k, v), grads(ref, q, k, v)):
        err = (got.double() - want).abs().max().item()
        assert err < 2e-2 * max(1.0, want.abs().max().item())


@pytest.mark.gpu
@pytest.mark.parametrize("name", ("torch_flash", "flash_attn"))
def test_gpu_dropout_reproducible_and_differentiable(name):
    kernel = _cuda_kernel(name)
    lengths = (100, 60)
    seqs = make_seqs(lengths, device="cuda")
    q, k, v = make_qkv(sum(lengths), heads=2, head_dim=64, dtype=torch.bfloat16, device="cuda")
    clean = kernel(q, k, v, seqs, 16, 0.0, 0.125)
    torch.manual_seed(3)
    first = kernel(q, k, v, seqs, 16, 0.5, 0.125)
    torch.manual_seed(3)
    second = kernel(q, k, v, seqs, 16, 0.5, 0.125)
    assert torch.equal(first, second) and not torch.equal(first, clean)
    assert all(torch.isfinite(g).all() for g in grads(first, q, k, v))


# ---------------------------------------------------------------- flex for CPU training: refused up front
def _flex_cpu_training_run(tmp_path):
    """A tiny CPU run YAML asking for flex; skips where this torch trains flex on CPU."""
    from _train_support import make_corpus, tiny_run, write_yaml

    why = _flex_backward_reason()
    if why is None:
        pytest.skip("this torch has FlexAttention backward on CPU: flex may train there")
    corpus = make_corpus(tmp_path / "corpus", n_train=8, n_val=2)
    run = tiny_run(corpus, tmp_path / "save", model={"attn_backend": "flex"})
    return write_yaml(tmp_path / "run.yaml", run), why


def test_flex_for_cpu_training_is_a_config_error_before_anything_is_built(tmp_path):
    from flexbert.config.loading import load_run_config
    from flexbert.train.builder import build_trainer

    path, why = _flex_cpu_training_run(tmp_path)
    loaded = load_run_config(str(path), [])
    with pytest.raises(ConfigError) as err:
        build_trainer(loaded)  # the trainer's own path: preflight refuses before the model is built
    assert str(err.value) == f"attention kernel 'flex' at model.attn_backend cannot train on cpu torch.float32: {why}"
    assert not (tmp_path / "save" / "config.yaml").exists()
    # Same run with sdpa passes the check: the refusal is about flex, not the run.
    ok = load_run_config(str(path), ["model.attn_backend=sdpa"])
    from flexbert.train.builder import preflight

    preflight(ok, world_size=1)


@pytest.mark.slow
def test_train_py_refuses_flex_on_cpu_in_one_line_and_dry_run_warns(tmp_path):
    from _train_support import run_train

    path, why = _flex_cpu_training_run(tmp_path)
    out = run_train(str(path), timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    want = f"attention kernel 'flex' at model.attn_backend cannot train on cpu torch.float32: {why}"
    assert last == f"config error: {want}"
    assert "Traceback" not in out.stderr and not (tmp_path / "save" / "config.yaml").exists()
    dry = run_train(str(path), "--dry-run", timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"warning: training on this machine would stop with: config error: attention kernel 'flex'" in dry.stdout
    assert why in dry.stdout
