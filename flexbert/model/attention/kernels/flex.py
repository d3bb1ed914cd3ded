"""`flex`: FlexAttention over a packed batch with a document + sliding-window block mask.

Shape legend: T packed tokens, P tokens after padding T up to a multiple of the
block size, N heads, H head dim, D documents, Q / K query / key blocks.

The block mask is built directly from the document boundaries, block by block
(O((P / 128)^2) work, no T x T mask is ever materialised), once per batch and
window; it is kept in `PackedSeqInfo.cache` so every layer of a forward reuses it.
On CUDA FlexAttention runs torch.compile'd (eager FlexAttention is a slow dense
reference there). On CPU it runs eagerly: torch 2.7 could not compile it for CPU,
and where torch can (2.14 here, forward only) compiling costs tens of seconds for a
kernel that is a reference for tests, debugging and inference, not a fast path.

CPU backward: torch 2.7 ran eager FlexAttention's backward on CPU (this project's
tests compared it with the reference); recent torch refuses it (2.14 here:
`NotImplementedError: FlexAttention does not support backward on CPU`, pytorch#169646).
Which torch we have is found out by a tiny probe, once per process
(`_cpu_backward_refusal`), not from the version string. Where refused,
`FlexKernel.backward_unavailable_reason` says so (training on CPU with `flex` is a
config error before anything is built), the forward still runs with gradients
enabled (eval without `no_grad`), and a backward through it raises that reason.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable

import torch
import torch.nn.functional as F

from flexbert.model.registries import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo, document_ids

__all__ = ["FlexKernel", "BLOCK_SIZE", "build_block_mask", "document_ids"]

BLOCK_SIZE = 128  # FlexAttention's default tile: P is padded to a multiple of it

_compiled_flex: Callable | None = None  # torch.compile(flex_attention), made on first CUDA call


def _flex_available() -> bool:
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def _flex_fn(device: torch.device) -> Callable:
    """Return flex_attention, compiled (once per process) when running on CUDA."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex


_UNPROBED = object()
_cpu_refusal: Any = _UNPROBED  # None: CPU backward works; str: torch's refusal. Set by the probe.


def _cpu_backward_refusal() -> str | None:
    """torch's refusal of FlexAttention backward on CPU, or None when it works; probed once per process.

    Runs one tiny eager flex_attention forward + backward (1 head, 16 tokens, head dim 16):
    ~free where torch refuses (it checks requires_grad before computing), milliseconds
    where it works.
    """
    global _cpu_refusal
    if _cpu_refusal is _UNPROBED:
        from torch.nn.attention.flex_attention import flex_attention

        # Grad must be on even if the caller is in no_grad / inference mode.
        with torch.inference_mode(False), torch.enable_grad():
            q = torch.zeros(1, 1, 16, 16, requires_grad=True)
            try:
                flex_attention(q, q, q).sum().backward()
                _cpu_refusal = None
            except NotImplementedError as e:
                _cpu_refusal = str(e) or "NotImplementedError"
    return _cpu_refusal


class _ForwardOnly(torch.autograd.Function):
    """Runs FlexAttention forward on inputs that require grad; its backward raises `reason`.

    torch refuses CPU FlexAttention inputs that require grad even when nobody will call
    backward (eval without no_grad); this keeps that forward working and moves the error
    to the backward, where it is true.
    """

    @staticmethod
    def forward(ctx, q, k, v, fn, block_mask, scale, reason):
        ctx.reason = reason
        return fn(q.detach(), k.detach(), v.detach(), block_mask=block_mask, scale=scale)

    @staticmethod
    def backward(ctx, grad_out):
        raise RuntimeError(ctx.reason)


def _mask_mod_for(doc_P: torch.Tensor, window: int | None) -> Callable:
    """Element-wise rule: same document, and |i - j| <= window unless global."""
    if window is None:

        def same_doc(b, h, q_idx, kv_idx):
            return doc_P[q_idx] == doc_P[kv_idx]

        return same_doc

    def same_doc_in_window(b, h, q_idx, kv_idx):
        return (doc_P[q_idx] == doc_P[kv_idx]) & ((q_idx - kv_idx).abs() <= window)

    return same_doc_in_window


def _ordered_indices(blocks_QK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count per query block, kv block indices with the selected ones first, ascending)."""
    num = blocks_QK.sum(-1, dtype=torch.int32)
    # A stable descending sort on the 0/1 flags lists selected blocks first, in order.
    idx = torch.argsort(blocks_QK.to(torch.int8), dim=-1, descending=True, stable=True)
    return num[None, None], idx.to(torch.int32)[None, None]


def build_block_mask(cu_seqlens: torch.Tensor, padded_len: int, window: int | None,
                     device: torch.device, block_size: int = BLOCK_SIZE):
    """Build the FlexAttention BlockMask of a packed batch from its document boundaries.

    A (query block, key block) tile is *full* (no element mask needed) when both
    blocks lie inside one and the same document and every pair is within the window;
    it is *partial* (the element rule `mask_mod` decides) when the blocks share a
    document range and come within `window` of each other, and skipped otherwise.
    Partial is a safe over-approximation: the element rule is exact.

    Args:
        cu_seqlens: (D+1,) int cumulative document lengths, cu_seqlens[-1] <= padded_len.
        padded_len: P, a multiple of `block_size`; positions past cu_seqlens[-1]
            form one extra document of padding.
        window: half-width (|i - j| <= window), or None for global attention.
        device: where the mask lives (the device of q).
        block_size: tile size of the mask.
    Returns:
        A BlockMask of shape (1, 1, P, P), broadcast over heads.
    """
    from torch.nn.attention.flex_attention import BlockMask

    assert padded_len % block_size == 0, (padded_len, block_size)
    doc_P = document_ids(cu_seqlens, padded_len, device)
    doc_QB = doc_P.view(-1, block_size)
    first, last = doc_QB[:, 0], doc_QB[:, -1]  # doc ids are sorted: each block holds first..last
    shares_doc = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    one_doc = first == last
    full = shares_doc & one_doc[:, None] & one_doc[None, :]  # both blocks inside the same doc
    if window is not None:
        blocks = torch.arange(doc_QB.shape[0], device=device)
        dist = (blocks[:, None] - blocks[None, :]).abs() * block_size
        nearest = (dist - (block_size - 1)).clamp(min=0)  # closest pair of positions
        farthest = dist + (block_size - 1)
        shares_doc = shares_doc & (nearest <= window)
        full = full & (farthest <= window)
    partial = shares_doc & ~full
    kv_num, kv_idx = _ordered_indices(partial)
    full_num, full_idx = _ordered_indices(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=_mask_mod_for(doc_P, window))


@KERNELS.register("flex")
class FlexKernel(AttentionKernel):
    """FlexAttention with a per-batch document + window block mask; no attention dropout."""

    name = "flex"
    supports_dropout = False

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str | None:
        """Why FlexAttention cannot run on `device` / `dtype`, or None."""
        device = torch.device(device)
        if not _flex_available():
            return "torch too old: needs FlexAttention (torch >= 2.5)"
        if not dtype.is_floating_point:
            return f"needs a floating-point dtype, got {dtype}"
        if device.type == "cpu":
            return None  # eager, a dense reference (tests, debugging); backward: see below
        if device.type != "cuda":
            return f"runs on CUDA or CPU only, not {device.type}"
        if not torch.cuda.is_available():
            return "needs CUDA (torch.cuda.is_available() is False)"
        if importlib.util.find_spec("triton") is None:
            return "needs triton to compile FlexAttention on CUDA"
        return None

    def backward_unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why FlexAttention cannot compute gradients on `device` / `dtype` (CPU in recent torch), or None."""
        if torch.device(device).type != "cpu" or not _flex_available() or _cpu_backward_refusal() is None:
            return None
        return (f"FlexAttention has no backward on CPU in torch {torch.__version__} (forward only: "
                "inference works); to train on CPU set model.attn_backend: sdpa (or eager)")

    def block_mask(self, seqs: PackedSeqInfo, total: int, window: int | None, device: torch.device):
        """Return (block mask, padded length P) for `total` tokens and `window`, built once."""
        key = f"flex_block_mask:window={window}:{device}"
        if key not in seqs.cache:
            padded = -(-total // BLOCK_SIZE) * BLOCK_SIZE
            seqs.cache[key] = (build_block_mask(seqs.cu_seqlens, padded, window, device), padded)
        return seqs.cache[key]

    def __call__(self, q_TNH, k_TNH, v_TNH, seqs: PackedSeqInfo, window: int | None,
                 dropout_p: float, scale: float) -> torch.Tensor:
        """Attention of packed documents.

        Args:
            q_TNH, k_TNH, v_TNH: (T, N, H) queries, keys, values.
            seqs: document boundaries of the pack (cu_seqlens[-1] == T).
            window: half-width of the sliding window, None for global.
            dropout_p: must be 0 (FlexAttention has no attention dropout).
            scale: softmax scale applied to q k^T.
        Returns:
            (T, N, H) in the dtype of q.
        """
        if dropout_p > 0:
            raise ValueError("the flex attention kernel has no attention dropout; "
                             "set model.attention_dropout: 0.0 or pick another kernel")
        total = q_TNH.shape[0]
        mask, padded = self.block_mask(seqs, total, window, q_TNH.device)
        pad = padded - total

        def to_1NPH(x_TNH):
            # Padding rows are zeros in their own document: they only see each other.
            x_PNH = F.pad(x_TNH, (0, 0, 0, 0, 0, pad)) if pad else x_TNH
            return x_PNH.transpose(0, 1).unsqueeze(0)

        fn = _flex_fn(q_TNH.device)
        q, k, v = to_1NPH(q_TNH), to_1NPH(k_TNH), to_1NPH(v_TNH)
        if not torch.is_grad_enabled():
            # No graph is recorded: leaves that require grad (torch refuses them on CPU) are safe to detach.
            q, k, v = q.detach(), k.detach(), v.detach()
        elif q_TNH.device.type == "cpu" and (q.requires_grad or k.requires_grad or v.requires_grad):
            why = self.backward_unavailable_reason(q_TNH.device, q_TNH.dtype)
            if why is not None:
                reason = f"attention kernel 'flex': {why}"
                return _ForwardOnly.apply(q, k, v, fn, mask, scale, reason)[0].transpose(0, 1)[:total]
        out_1NPH = fn(q, k, v, block_mask=mask, scale=scale)
        return out_1NPH[0].transpose(0, 1)[:total]
