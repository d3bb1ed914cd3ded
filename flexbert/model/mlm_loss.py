"""MLM loss kernels (model.mlm_loss): how the decoder projection + cross-entropy runs.

Shape legend: M scored rows (the labelled tokens with the sparse head, else every token),
D hidden size, V vocabulary, C rows per chunk.

Both kernels compute the same thing: logits = h W^T + b in the compute dtype (the autocast
dtype when autocast is on, else h's dtype), then the mean fp32 cross-entropy over rows whose
label is not -100 (0, not NaN, when there is none).

- `dense` (the reference): the (M, V) logits are materialised in the compute dtype, copied to
  fp32 for `F.cross_entropy`, and autograd keeps them (plus the fp32 log-softmax) for backward.
  At ModernBERT-base size (V 50368) and a 64 x 1024 microbatch (~17k masked tokens) that is
  ~3.4 GB per fp32 copy of the logits.
- `chunked`: the rows are processed C at a time; per chunk the logits, the fp32 log-sum-exp,
  each row's loss and argmax, and (when gradients are wanted) d loss / d logits are formed and
  immediately contracted into the gradients of h, W and b, so at most one (C, V) fp32 block
  exists at any time and nothing of size (M, V) is kept for backward. Backward only scales the
  stored gradients by the incoming gradient (the loss is a scalar), so there is no recompute:
  the matmul FLOPs equal the dense path's. C defaults to the rows of a 128 MiB fp32 block.

`auto` resolves once per (device, dtype) like the attention kernels (AUTO_ORDER below) and
logs its choice. The chunked kernel runs only for forwards that record gradients (training);
without gradients (evaluation, `torch.no_grad`) the model uses `dense`, because its callers
read the logits. In the chunked path `MaskedLMOutput.logits` is computed on first access,
without gradients, from the head output (Composer's training metrics read it); the per-row
losses and argmax predictions are returned alongside, so metrics need not touch the logits.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from flexbert.labels import IGNORE_INDEX
from flexbert.errors import ConfigError
from flexbert.model.registries import MLM_LOSSES

__all__ = ["MLM_LOSSES", "MLMLossKernel", "MLMLossResult", "AUTO_ORDER", "IGNORE_INDEX", "resolve_mlm_loss",
           "masked_lm_loss", "chunked_linear_cross_entropy", "default_chunk_rows", "compute_dtype"]

log = logging.getLogger(__name__)

#: The fp32 logits block of one chunk is at most this many elements (128 MiB), at least 64 rows.
CHUNK_ELEMENTS = 1 << 25


def masked_lm_loss(logits_MV: torch.Tensor, labels_M: torch.Tensor) -> torch.Tensor:
    """Mean CE (fp32) over labels != -100; 0 (with a graph) when no label is set, instead of NaN.

    Summing then dividing by the clamped count avoids a host sync on the count.
    """
    total = F.cross_entropy(logits_MV.float(), labels_M, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels_M != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


def compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The dtype a Linear on `h` computes in here: the autocast dtype when autocast is on, else h's."""
    if torch.is_autocast_enabled(h.device.type):
        return torch.get_autocast_dtype(h.device.type)
    return h.dtype


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: a (C, V) fp32 block of at most CHUNK_ELEMENTS, rounded down to 64 rows (>= 64)."""
    return max(64, (CHUNK_ELEMENTS // max(vocab_size, 1)) // 64 * 64)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean CE of (h W^T + b) against labels, chunked over rows; gradients formed in forward."""

    @staticmethod
    def forward(ctx, h_MD, weight_VD, bias_V, labels_M, chunk_rows: int, dtype: torch.dtype, need_grad: bool):
        M = h_MD.shape[0]
        # The matmuls run in `dtype` exactly as the dense path's autocast Linear does (one cast of
        # W and h up front); everything after the logits is fp32.
        with torch.autocast(h_MD.device.type, enabled=False):
            h = h_MD.to(dtype)
            w = weight_VD.to(dtype)
            b = bias_V.to(dtype) if bias_V is not None else None
            valid_M = labels_M != IGNORE_INDEX
            target_M = labels_M.masked_fill(~valid_M, 0)
            count = valid_M.sum().clamp(min=1)
            weight_M = valid_M.float() / count  # d mean / d (row loss); 0 on ignored rows
            loss_M = torch.zeros(M, dtype=torch.float32, device=h.device)
            pred_M = torch.zeros(M, dtype=torch.long, device=h.device)
            grad_h = grad_w = grad_b = None
            if need_grad:
                grad_h = torch.empty_like(h)
                grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
                grad_b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if b is not None else None
            for start in range(0, M, chunk_rows):
                end = min(M, start + chunk_rows)
                h_CD = h[start:end]
                logits_CV = F.linear(h_CD, w, b).float()  # a fresh fp32 tensor (or the fp32 linear's own)
                tgt_C = target_M[start:end]
                picked_C = logits_CV.gather(1, tgt_C[:, None]).squeeze(1)
                # One pass gives the argmax and the max that stabilises the exponentials; then the
                # block is turned into exp(logits - max) in place: the softmax numerators.
                max_C, pred_M[start:end] = logits_CV.max(dim=-1)
                exp_CV = logits_CV.sub_(max_C[:, None]).exp_()
                sumexp_C = exp_CV.sum(dim=-1)
                loss_M[start:end] = torch.where(valid_M[start:end], max_C + sumexp_C.log() - picked_C, 0.0)
                if not need_grad:
                    continue
                # d loss / d logits = (softmax - onehot) * valid / count, in place over the fp32 block.
                row_C = weight_M[start:end]
                g_CV = exp_CV.mul_((row_C / sumexp_C)[:, None])
                g_CV.scatter_add_(1, tgt_C[:, None], -row_C[:, None])
                if grad_b is not None:
                    grad_b.add_(g_CV.sum(dim=0))
                if dtype == torch.float32:
                    torch.mm(g_CV, w, out=grad_h[start:end])
                    grad_w.addmm_(g_CV.t(), h_CD)
                else:  # matmuls in the compute dtype (tensor cores), the weight gradient summed in fp32
                    g_lo = g_CV.to(dtype)
                    torch.mm(g_lo, w, out=grad_h[start:end])
                    grad_w.add_(torch.mm(g_lo.t(), h_CD))
            loss = loss_M.sum() / count
        ctx.mark_non_differentiable(loss_M, pred_M)
        # Kept as attributes, not saved tensors: backward scales them in place and drops them, so
        # they are freed as soon as they are handed over (a second backward is refused).
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (h_MD.dtype, weight_VD.dtype, bias_V.dtype if bias_V is not None else None)
        return loss, loss_M, pred_M

    @staticmethod
    def backward(ctx, grad_loss, _grad_loss_M, _grad_pred_M):
        if ctx.grads is None:
            raise RuntimeError("backward ran twice through the chunked MLM loss (retain_graph): its gradients are "
                               "formed once in forward; use model.mlm_loss: dense for that")
        grad_h, grad_w, grad_b = ctx.grads
        ctx.grads = None
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        out_h = grad_h.to(h_dtype).mul_(grad_loss) if need_h else None
        out_w = grad_w.mul_(grad_loss).to(w_dtype) if need_w else None
        out_b = grad_b.mul_(grad_loss).to(b_dtype) if need_b and grad_b is not None else None
        return out_h, out_w, out_b, None, None, None, None


def chunked_linear_cross_entropy(h_MD: torch.Tensor, weight_VD: torch.Tensor, bias_V: torch.Tensor | None,
                                 labels_M: torch.Tensor, chunk_rows: int | None = None
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of `h W^T + b` against `labels`, never holding the (M, V) logits.

    Args:
        h_MD: (M, D) head output of the scored rows.
        weight_VD: (V, D) decoder weight (may be the tied token embeddings).
        bias_V: (V,) decoder bias or None.
        labels_M: (M,) int64 targets; -100 rows are ignored (no loss, no gradient).
        chunk_rows: rows per chunk C (default: `default_chunk_rows(V)`).
    Returns:
        (loss, loss_M, pred_M): the scalar fp32 mean loss (0 when no row is labelled), with
        gradients to h, W and b when they require grad and grad mode is on; the fp32 per-row
        losses (0 on ignored rows) and the int64 argmax predictions, both without gradients.
    """
    if h_MD.dim() != 2 or labels_M.shape != h_MD.shape[:1]:
        raise ValueError(f"expected h (M, D) and labels (M,), got {tuple(h_MD.shape)} and {tuple(labels_M.shape)}")
    C = int(chunk_rows) if chunk_rows is not None else default_chunk_rows(weight_VD.shape[0])
    if C < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    inputs = (h_MD, weight_VD) + ((bias_V,) if bias_V is not None else ())
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    return _ChunkedLinearCrossEntropy.apply(h_MD, weight_VD, bias_V, labels_M, C, compute_dtype(h_MD), need_grad)


@dataclasses.dataclass
class MLMLossResult:
    """What a loss kernel returns for the scored rows.

    Attributes:
        loss: scalar fp32 mean cross-entropy (0 when no row is labelled).
        logits: (M, V) in the compute dtype, or None when the kernel never formed them all.
        loss_M: (M,) fp32 per-row losses without gradient (0 on ignored rows), or None.
        predictions_M: (M,) int64 argmax per row, or None.
    """

    loss: torch.Tensor
    logits: torch.Tensor | None
    loss_M: torch.Tensor | None = None
    predictions_M: torch.Tensor | None = None


class MLMLossKernel:
    """How decoder + cross-entropy runs; subclasses register in MLM_LOSSES under `name`."""

    name: ClassVar[str]

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this kernel cannot run on `device` / `dtype`, or None when it can."""
        return None

    def __call__(self, h_MD: torch.Tensor, decoder: nn.Linear, labels_M: torch.Tensor) -> MLMLossResult:
        raise NotImplementedError


@MLM_LOSSES.register("dense")
class DenseMLMLoss(MLMLossKernel):
    """The reference: full (M, V) logits from the decoder module, then fp32 F.cross_entropy."""

    name = "dense"

    def __call__(self, h_MD, decoder, labels_M):
        logits_MV = decoder(h_MD)
        return MLMLossResult(loss=masked_lm_loss(logits_MV, labels_M), logits=logits_MV)


@MLM_LOSSES.register("chunked")
class ChunkedMLMLoss(MLMLossKernel):
    """Decoder + cross-entropy fused over chunks of rows (`chunked_linear_cross_entropy`)."""

    name = "chunked"

    def __init__(self, chunk_rows: int | None = None):
        self.chunk_rows = chunk_rows

    def __call__(self, h_MD, decoder, labels_M):
        loss, loss_M, pred_M = _eager_if_compiling()(h_MD, decoder.weight, decoder.bias, labels_M, self.chunk_rows)
        return MLMLossResult(loss=loss, logits=None, loss_M=loss_M, predictions_M=pred_M)


_DISABLED: list[Callable] = []


def _eager_if_compiling() -> Callable:
    """chunked_linear_cross_entropy, kept out of torch.compile graphs when Dynamo is in use.

    Its loop runs over a data-dependent row count, which Dynamo would specialise on (a recompile
    per batch); disabled, it runs eagerly between graphs. Without Dynamo imported nothing can be
    compiling, and `import torch._dynamo` (it pulls in triton) is avoided.
    """
    if "torch._dynamo" not in sys.modules:
        return chunked_linear_cross_entropy
    if not _DISABLED:
        _DISABLED.append(torch.compiler.disable(chunked_linear_cross_entropy))
    return _DISABLED[0]


# `auto` per device type: the first kernel that can run. CPU: chunked, measured (bench/mlm_loss.py,
# yamls/models/README.md). CUDA: dense until chunked is measured on a GPU (bench/gpu_session.sh
# times both and checks them in bf16); `model.mlm_loss: chunked` opts in.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cuda": ("dense", "chunked"), "cpu": ("chunked", "dense")}


def resolve_mlm_loss(name: str, device: torch.device, dtype: torch.dtype,
                     where: str = "model.mlm_loss") -> MLMLossKernel:
    """Return the MLM loss kernel called `name` (or the `auto` choice) for `device` / `dtype`.

    Raises:
        ConfigError: for an unknown name, or a named kernel that cannot run here (with its reason).
    """
    device = torch.device(device)
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER.get(device.type, ("dense",)):
            kernel = MLM_LOSSES.get(candidate)()
            why = kernel.unavailable_reason(device, dtype)
            if why is None:
                skipped = f" ({'; '.join(reasons)})" if reasons else ""
                log.info("mlm loss: %s%s", candidate, skipped)
                return kernel
            reasons.append(f"{candidate}: {why}")
        raise ConfigError(f"no MLM loss kernel can run on {device} {dtype}: {'; '.join(reasons)}")
    kernel = MLM_LOSSES.get(name, where)()
    why = kernel.unavailable_reason(device, dtype)
    if why is not None:
        raise ConfigError(f"MLM loss kernel '{name}' at {where} cannot run on {device} {dtype}: {why}")
    return kernel


def lazy(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Wrap `fn` so that it runs once, without gradients, on first call."""
    cache: list[torch.Tensor] = []

    def get() -> torch.Tensor:
        if not cache:
            with torch.no_grad():
                cache.append(fn())
        return cache[0]

    return get
