"""`torch_flash`: PyTorch's bundled FlashAttention varlen kernels (no extra package).

Shape legend: T packed tokens, N heads, H head dim, H8 head dim rounded up to a
multiple of 8, D documents.

Two entry points, chosen by feature detection (not by version strings):
- `torch.nn.attention.varlen.varlen_attn(..., window_size=)` (public, torch >= 2.10;
  torch 2.9's version has no window), used when there is no attention dropout;
- otherwise `aten::_flash_attention_forward/_backward` (torch >= 2.3 has the
  varlen `cum_seq_q/k` form and `window_size_left/right`), wrapped in an
  autograd.Function so that backward gets exactly the saved output, logsumexp and
  dropout RNG state of the forward.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F

from flexbert.model.registries import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo, flash_hardware_reason, flash_head_dim_reason

__all__ = ["TorchFlashKernel"]


def _public_varlen() -> Callable | None:
    """torch's public varlen_attn when it takes `window_size`, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    try:
        params = inspect.signature(varlen_attn).parameters
    except (TypeError, ValueError):
        return None
    return varlen_attn if "window_size" in params else None


def _has_aten_varlen() -> bool:
    """Whether aten's flash forward takes cum_seq_q/k and window sizes (torch >= 2.3)."""
    try:
        schema = torch.ops.aten._flash_attention_forward.default._schema
    except (AttributeError, RuntimeError):
        return False
    names = {arg.name for arg in schema.arguments}
    return {"cum_seq_q", "window_size_left", "window_size_right"} <= names


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    # The kernels accept any row strides but need unit stride in the head dim.
    return x if x.stride(-1) == 1 else x.contiguous()


class _AtenFlashVarlen(torch.autograd.Function):
    """aten::_flash_attention_forward/_backward on packed (T, N, H8) tensors."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, dropout_p, scale, window):
        # None (not -1) for global attention: what torch's own callers pass.
        left = right = window
        out, lse, rng_state, unused, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p,
            False,  # is_causal: an encoder sees both sides
            False,  # return_debug_mask
            scale=scale, window_size_left=left, window_size_right=right,
        )
        # rng_state / unused are the philox seed and offset: backward replays the same dropout.
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, rng_state, unused)
        ctx.args = (max_seqlen, dropout_p, scale, left, right)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, cu_seqlens, rng_state, unused = ctx.saved_tensors
        max_seqlen, dropout_p, scale, left, right = ctx.args
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            _last_dim_contiguous(grad_out), q, k, v, out, lse, cu_seqlens, cu_seqlens,
            max_seqlen, max_seqlen, dropout_p, False, rng_state, unused,
            scale=scale, window_size_left=left, window_size_right=right,
        )
        return dq, dk, dv, None, None, None, None, None


@KERNELS.register("torch_flash")
class TorchFlashKernel(AttentionKernel):
    """PyTorch's FlashAttention-2 varlen kernels; CUDA, fp16/bf16, window and dropout."""

    name = "torch_flash"
    supports_dropout = True

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str | None:
        """Why torch's flash varlen kernels cannot run on `device` / `dtype` / `head_dim`, or None."""
        device = torch.device(device)
        if not _has_aten_varlen():
            return "torch too old: needs aten::_flash_attention_forward with windows (torch >= 2.3)"
        why = flash_head_dim_reason(head_dim) or flash_hardware_reason(device, dtype)
        if why is None and not torch.backends.cuda.is_flash_attention_available():
            why = "this torch build has no FlashAttention kernels"
        return why

    def __call__(self, q_TNH, k_TNH, v_TNH, seqs: PackedSeqInfo, window: int | None,
                 dropout_p: float, scale: float) -> torch.Tensor:
        """Attention of packed documents.

        Args:
            q_TNH, k_TNH, v_TNH: (T, N, H) fp16/bf16 queries, keys, values on CUDA.
            seqs: document boundaries of the pack (cu_seqlens[-1] == T).
            window: half-width of the sliding window, None for global.
            dropout_p: attention-probability dropout (pass 0.0 in eval).
            scale: softmax scale applied to q k^T.
        Returns:
            (T, N, H) in the dtype of q.
        """
        head_dim = q_TNH.shape[-1]  # <= 256: checked in unavailable_reason when the model resolved the kernel
        # The kernels need H % 8 == 0. Zero columns change no q.k product and give zero
        # output columns, which are cut off again (autograd sees the pad and the slice).
        pad = -head_dim % 8
        q, k, v = (_last_dim_contiguous(F.pad(x, (0, pad)) if pad else x) for x in (q_TNH, k_TNH, v_TNH))
        cu = seqs.cu_seqlens.to(device=q.device, dtype=torch.int32)
        public = _public_varlen()
        if public is not None and dropout_p == 0.0:
            out = public(q, k, v, cu, cu, seqs.max_seqlen, seqs.max_seqlen, scale=scale,
                         window_size=(-1, -1) if window is None else (window, window))
        else:
            out = _AtenFlashVarlen.apply(q, k, v, cu, seqs.max_seqlen, float(dropout_p), scale, window)
        return out[..., :head_dim] if pad else out
