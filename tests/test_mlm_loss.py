"""The chunked MLM loss against the reference (full logits + F.cross_entropy), alone and in the model."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from flexbert import FlexBertForMaskedLM
from flexbert.config.strict import ConfigError
from flexbert.model.mlm_loss import (ChunkedMLMLoss, DenseMLMLoss, chunked_linear_cross_entropy, default_chunk_rows,
                                     resolve_mlm_loss)


def reference(h, w, b, labels):
    """What the dense path computes: logits in h's dtype, fp32 mean CE over labels != -100 (0 if none)."""
    logits = F.linear(h, w, b)
    total = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1), logits


def make(M=37, D=16, V=101, bias=True, ignore_every=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(M, D, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(V, D, generator=g) * 0.5).to(dtype).requires_grad_()
    b = (torch.randn(V, generator=g) * 0.1).to(dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (M,), generator=g)
    if ignore_every:
        labels[::ignore_every] = -100
    return h, w, b, labels


def grads(loss, tensors):
    tensors = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, tensors, allow_unused=False)


# 37 rows: chunks of 1, 5 and 8 leave a remainder; 37 is exactly one chunk; 64 is more than the rows.
@pytest.mark.parametrize("chunk_rows", [1, 5, 8, 37, 64, None])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_equals_reference_fp32(chunk_rows, bias):
    h, w, b, labels = make(bias=bias)
    ref_loss, ref_logits = reference(h, w, b, labels)
    ref_grads = grads(ref_loss, (h, w, b))
    loss, loss_M, pred_M = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=chunk_rows)
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    for ours, theirs in zip(grads(loss, (h, w, b)), ref_grads):
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-5)
    # per-row losses (0 where ignored) and argmax predictions, without gradients
    keep = labels != -100
    per_row = F.cross_entropy(ref_logits.detach(), labels, ignore_index=-100, reduction="none")
    torch.testing.assert_close(loss_M, per_row, atol=1e-6, rtol=1e-6)
    assert torch.all(loss_M[~keep] == 0) and not loss_M.requires_grad and not pred_M.requires_grad
    assert torch.equal(pred_M, ref_logits.argmax(-1))


def test_chunked_equals_reference_bf16_autocast_cpu():
    """bf16 matmuls (autocast, fp32 weights as in amp_bf16 training), fp32 softmax: looser tolerance."""
    h, w, b, labels = make(M=50, D=32, V=203)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_loss, _ = reference(h, w, b, labels)
    ref_grads = grads(ref_loss, (h, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=7)
    ours = grads(loss, (h, w, b))
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)  # same bf16 logits, fp32 after
    for o, r in zip(ours, ref_grads):
        assert o.dtype == r.dtype == torch.float32
        # the reference rounds the logits' gradient to bf16 before both matmuls, as does ours
        torch.testing.assert_close(o, r, atol=2e-3 * r.abs().max().item(), rtol=2e-2)


def test_chunked_equals_reference_bf16_tensors():
    """bf16 inputs without autocast: gradients come back in bf16, like a bf16 Linear's."""
    h, w, b, labels = make(M=40, D=32, V=150, dtype=torch.bfloat16)
    ref_loss, _ = reference(h, w, b, labels)
    ref_grads = grads(ref_loss, (h, w, b))
    loss, _, _ = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=9)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    for o, r in zip(grads(loss, (h, w, b)), ref_grads):
        assert o.dtype == torch.bfloat16
        torch.testing.assert_close(o.float(), r.float(), atol=2e-2 * r.float().abs().max().item(), rtol=2e-2)


@pytest.mark.parametrize("M", [0, 6])
def test_no_labelled_row_gives_zero_loss_and_zero_grads(M):
    """No scored row (M = 0) or only ignored rows: loss 0 (not NaN) with a graph, all gradients 0."""
    h, w, b, labels = make(M=M, ignore_every=0)
    labels.fill_(-100)
    ref_loss, _ = reference(h, w, b, labels)
    loss, loss_M, pred_M = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=4)
    assert loss.item() == 0.0 == ref_loss.item() and loss.requires_grad
    assert loss_M.shape == pred_M.shape == (M,)
    for o, r in zip(grads(loss, (h, w, b)), grads(ref_loss, (h, w, b))):
        assert torch.equal(o, torch.zeros_like(o)) and torch.equal(r, torch.zeros_like(r))


def test_upstream_gradient_scales_the_gradients():
    """Backward multiplies by the incoming gradient (e.g. Composer's microbatch weighting)."""
    h, w, b, labels = make()
    ref_loss, _ = reference(h, w, b, labels)
    loss, _, _ = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=8)
    for o, r in zip(grads(0.25 * loss, (h, w, b)), grads(0.25 * ref_loss, (h, w, b))):
        torch.testing.assert_close(o, r, atol=1e-7, rtol=1e-5)


def test_second_backward_is_refused():
    h, w, b, labels = make()
    loss, _, _ = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=8)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="mlm_loss: dense"):
        loss.backward()


def test_without_grad_only_the_loss():
    h, w, b, labels = make()
    ref_loss, _ = reference(h, w, b, labels)
    with torch.no_grad():
        loss, _, _ = chunked_linear_cross_entropy(h, w, b, labels, chunk_rows=8)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref_loss.detach(), atol=1e-6, rtol=1e-6)


def test_default_chunk_rows_bounds_the_block():
    assert default_chunk_rows(50368) == 640  # 640 x 50368 fp32 = 123 MiB <= 128 MiB
    assert default_chunk_rows(50368) * 50368 <= 1 << 25
    assert default_chunk_rows(10 ** 9) == 64  # never fewer than 64 rows
    with pytest.raises(ValueError, match="chunk_rows"):
        chunked_linear_cross_entropy(*make(), chunk_rows=0)


# ---------------------------------------------------------------- in the model


def _train_step(cfg, docs, labels, **kwargs):
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(cfg).train()
    out = model(docs.input_ids_T, labels=labels, cu_seqlens=docs.cu_seqlens, **kwargs)
    out.loss.backward()
    return model, out


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_model_chunked_equals_dense(make_config, make_docs, sparse, tied):
    """Same loss and every parameter gradient (the tied embedding/decoder weight included)."""
    docs = make_docs([14, 9, 20, 5])
    labels = torch.where(torch.arange(docs.input_ids_T.numel()) % 3 == 1, docs.input_ids_T, -100)
    results = {}
    for kind in ("dense", "chunked"):
        cfg = make_config(sparse_prediction=sparse, tie_word_embeddings=tied, mlm_loss=kind)
        results[kind] = _train_step(cfg, docs, labels)
    (dense, d_out), (chunked, c_out) = results["dense"], results["chunked"]
    assert chunked.mlm_loss_kernel(torch.device("cpu"), torch.float32).name == "chunked"
    torch.testing.assert_close(c_out.loss, d_out.loss, atol=1e-6, rtol=1e-6)
    d_params, c_params = dict(dense.named_parameters()), dict(chunked.named_parameters())
    assert d_params.keys() == c_params.keys()
    if tied:
        assert chunked.decoder.weight is chunked.model.embeddings.tok_embeddings.weight
    for name, p in d_params.items():
        torch.testing.assert_close(c_params[name].grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    # the chunked output still offers the logits (on demand, no graph), the same as the dense ones
    assert c_out.logits.shape == d_out.logits.shape and not c_out.logits.requires_grad
    torch.testing.assert_close(c_out.logits, d_out.logits.detach(), atol=1e-6, rtol=1e-6)
    assert torch.equal(c_out.labels, d_out.labels)
    scored = labels[labels != -100] if sparse else labels
    assert c_out.predictions.shape == c_out.token_loss.shape == scored.shape
    assert d_out.predictions is None and d_out.token_loss is None
    logits_R = c_out.logits if sparse else c_out.logits.reshape(-1, c_out.logits.shape[-1])
    assert torch.equal(c_out.predictions, logits_R.argmax(-1))
    torch.testing.assert_close(c_out.token_loss.sum() / (scored != -100).sum(), c_out.loss.detach())


def test_model_chunked_with_padded_input_and_no_labels(make_config, make_docs):
    """Padded input (dense head over all tokens), and a batch with no masked token."""
    docs = make_docs([10, 6, 3])
    cfg = make_config(sparse_prediction=False, mlm_loss="chunked")
    labels_BS = docs.pad(torch.where(torch.arange(docs.input_ids_T.numel()) % 4 == 1, docs.input_ids_T, -100))
    labels_BS[docs.attention_mask_BS == 0] = -100
    outs = {}
    for kind in ("dense", "chunked"):
        torch.manual_seed(0)
        model = FlexBertForMaskedLM(dataclasses.replace(cfg, mlm_loss=kind)).train()
        out = model(docs.input_ids_BS, attention_mask=docs.attention_mask_BS, labels=labels_BS)
        out.loss.backward()
        outs[kind] = (out, model.head.dense.weight.grad)
    torch.testing.assert_close(outs["chunked"][0].loss, outs["dense"][0].loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(outs["chunked"][1], outs["dense"][1], atol=1e-6, rtol=1e-5)
    assert outs["chunked"][0].logits.shape == (3, 10, 256)
    torch.testing.assert_close(outs["chunked"][0].logits, outs["dense"][0].logits.detach(), atol=1e-6, rtol=1e-6)
    # no masked token at all: loss 0 with a graph, zero gradients
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(make_config(mlm_loss="chunked")).train()
    out = model(docs.input_ids_T, labels=torch.full_like(docs.input_ids_T, -100), cu_seqlens=docs.cu_seqlens)
    assert out.loss.item() == 0.0 and out.logits.shape == (0, 256)
    out.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_without_grad_the_model_uses_dense_logits(make_config, make_docs):
    docs = make_docs([8, 12])
    labels = torch.where(torch.arange(20) % 2 == 0, docs.input_ids_T, -100)
    torch.manual_seed(0)
    model = FlexBertForMaskedLM(make_config(mlm_loss="chunked")).eval()
    with torch.no_grad():
        out = model(docs.input_ids_T, labels=labels, cu_seqlens=docs.cu_seqlens)
    assert isinstance(out._logits, torch.Tensor) and out.token_loss is None  # the dense kernel ran


def test_composer_metrics_read_the_chunked_outputs(make_config, make_docs):
    """Composer's training metrics take logits from the output: the on-demand logits serve them."""
    from flexbert.train.composer_model import MaskedAccuracy, MaskedLoss, _masked_logits_labels

    docs = make_docs([14, 9])
    labels = torch.where(torch.arange(23) % 3 == 0, docs.input_ids_T, -100)
    model, out = _train_step(make_config(mlm_loss="chunked"), docs, labels)
    logits, kept = _masked_logits_labels(out, {"labels": labels})
    acc, loss = MaskedAccuracy(), MaskedLoss()
    acc.update(logits, kept)
    loss.update(logits, kept)
    torch.testing.assert_close(loss.compute(), out.loss.detach(), atol=1e-6, rtol=1e-6)
    expected = (out.predictions == out.labels).float().mean()
    torch.testing.assert_close(acc.compute(), expected)


def test_composer_metrics_use_the_rows_without_making_logits(make_config, make_docs):
    """update_metric reads the chunked kernel's per-row losses and predictions: the same figures, no logits."""
    from flexbert.train.composer_model import FlexBertComposerModel, MaskedAccuracy, MaskedLoss, _masked_logits_labels

    docs = make_docs([14, 9])
    labels = torch.where(torch.arange(23) % 3 == 0, docs.input_ids_T, -100)
    model, out = _train_step(make_config(mlm_loss="chunked"), docs, labels)
    wrapper = FlexBertComposerModel(model)
    by_rows = {"acc": MaskedAccuracy(), "loss": MaskedLoss()}
    for metric in by_rows.values():
        wrapper.update_metric({"labels": labels}, out, metric)
    assert callable(out._logits), "the logits were never made"
    logits, kept = _masked_logits_labels(out, {"labels": labels})
    by_logits = {"acc": MaskedAccuracy(), "loss": MaskedLoss()}
    for metric in by_logits.values():
        metric.update(logits, kept)
    torch.testing.assert_close(by_rows["acc"].compute(), by_logits["acc"].compute())
    torch.testing.assert_close(by_rows["loss"].compute(), by_logits["loss"].compute(), atol=1e-6, rtol=1e-6)


def test_mlm_loss_key_is_resolved_like_the_attention_kernels(make_config):
    assert make_config().mlm_loss == "auto"
    # resolution needs no device: auto's choice per device type (CUDA keeps dense until measured there)
    assert resolve_mlm_loss("auto", torch.device("cpu"), torch.bfloat16).name == "chunked"
    assert resolve_mlm_loss("auto", torch.device("cuda"), torch.bfloat16).name == "dense"
    assert isinstance(resolve_mlm_loss("dense", torch.device("cpu"), torch.float32), DenseMLMLoss)
    assert isinstance(resolve_mlm_loss("chunked", torch.device("cpu"), torch.float32), ChunkedMLMLoss)
    with pytest.raises(ConfigError, match=r"unknown MLM loss kernel 'chunkd' at model.mlm_loss.*did you mean 'chunked'"):
        FlexBertForMaskedLM(make_config(mlm_loss="chunkd"))  # checked where the model is built


# ---------------------------------------------------------------- GPU (bench/gpu_session.sh runs these)


@pytest.mark.gpu
@pytest.mark.parametrize("M", [4096, 1000])
def test_chunked_equals_reference_cuda_bf16_base_vocab(M):
    """ModernBERT-base's vocab and width, bf16 autocast on CUDA (tensor cores, as amp_bf16 trains)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    g = torch.Generator().manual_seed(0)
    h = torch.randn(M, 768, generator=g).cuda().requires_grad_()
    w = (torch.randn(50368, 768, generator=g) * 0.02).cuda().requires_grad_()
    b = torch.zeros(50368).cuda().requires_grad_()
    labels = torch.randint(0, 50368, (M,), generator=g).cuda()
    labels[::7] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref_loss, _ = reference(h, w, b, labels)
    ref_grads = grads(ref_loss, (h, w, b))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _, _ = chunked_linear_cross_entropy(h, w, b, labels)
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=1e-4)
    for o, r in zip(grads(loss, (h, w, b)), ref_grads):
        assert o.dtype == r.dtype == torch.float32
        assert (o - r).abs().max().item() <= 2e-2 * r.abs().max().item()


@pytest.mark.gpu
def test_model_chunked_equals_dense_cuda_bf16(make_config, make_docs):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    docs = make_docs([140, 90, 200, 50])
    labels = torch.where(torch.arange(docs.input_ids_T.numel()) % 3 == 1, docs.input_ids_T, -100).cuda()
    out, grads_by = {}, {}
    for kind in ("dense", "chunked"):
        torch.manual_seed(0)
        model = FlexBertForMaskedLM(make_config(mlm_loss=kind, local_attention=32)).cuda().train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            res = model(docs.input_ids_T.cuda(), labels=labels, cu_seqlens=docs.cu_seqlens.cuda())
        res.loss.backward()
        assert model.mlm_loss_kernel(torch.device("cuda"), torch.bfloat16).name == kind
        out[kind], grads_by[kind] = res.loss.detach(), {n: p.grad for n, p in model.named_parameters()}
    torch.testing.assert_close(out["chunked"], out["dense"], atol=1e-3, rtol=1e-3)
    for name, g_dense in grads_by["dense"].items():
        g = grads_by["chunked"][name]
        assert (g - g_dense).abs().max().item() <= 5e-2 * max(g_dense.abs().max().item(), 1e-6), name


def test_bench_mlm_loss_smoke(capsys):
    """bench/mlm_loss.py at toy size on CPU: both kernels timed, memory measured, the same numbers."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "mlm_loss.py"
    spec = importlib.util.spec_from_file_location("bench_mlm_loss", script)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    (r,) = bench.main(["--device", "cpu", "--masked-tokens", "300", "--vocab", "700", "--hidden", "32",
                       "--repeats", "1", "--chunk-rows", "64"])
    out = capsys.readouterr().out
    assert r["chunk_rows"] == 64 and r["masked_tokens"] == 300 and r["dtype"] == "fp32"
    assert set(r["seconds"]) == {"dense", "chunked"} and all(t > 0 for t in r["seconds"].values())
    assert all(b > 0 for b in r["peak_extra_bytes"].values())
    assert r["loss"]["dense"] == pytest.approx(r["loss"]["chunked"], rel=1e-5)
    assert r["max_grad_diff"] <= 1e-5 * r["max_grad"]
    assert "chunked / dense: time" in out and "same result" in out
