"""The contract every attention kernel implements.

Shape legend: T packed tokens (all documents of a batch back to back), N heads,
H head dim, D documents (sequences) in the pack.

A kernel computes, for every document independently, softmax(q k^T * scale) v
over the keys of the same document within the window, and nothing else: packed
documents never attend to each other.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

__all__ = ["PackedSeqInfo", "AttentionKernel", "document_ids", "positions_in_documents", "flash_hardware_reason",
           "flash_head_dim_reason", "FLASH_MAX_HEAD_DIM"]

#: The largest head dim FlashAttention-2 kernels (flash-attn's and torch's) are built for.
FLASH_MAX_HEAD_DIM = 256


@dataclasses.dataclass
class PackedSeqInfo:
    """Where the documents of a packed batch start and end; built once per forward.

    Attributes:
        cu_seqlens: int32 (D+1,) cumulative document lengths, cu_seqlens[0] == 0,
            cu_seqlens[-1] == T.
        max_seqlen: the longest document, as a Python int (kernels need it on the host).
        cache: per-batch derived data a kernel may keep for reuse by every layer
            (block masks, document ids, ...), keyed by a name the kernel chooses
            that includes the window. Lives only as long as this object (one forward).
    """

    cu_seqlens: torch.Tensor
    max_seqlen: int
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return int(self.cu_seqlens[-1])

    @property
    def num_seqs(self) -> int:
        return self.cu_seqlens.numel() - 1


def document_ids(cu_seqlens: torch.Tensor, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Document index of every position, padding positions (>= cu_seqlens[-1]) in document D.

    The one place per-token document ids are computed (the model's entry, `sdpa`, `flex`).
    Empty documents own no position: a token belongs to the first document that ends after it.

    Args:
        cu_seqlens: (D+1,) int cumulative document lengths.
        length: number of positions P to label (P >= cu_seqlens[-1]); a Python int, so no
            device sync is needed.
        device: where the result lives (None: cu_seqlens' device).
    Returns:
        (P,) int64, non-decreasing.
    """
    ends = cu_seqlens[1:].to(device=device, dtype=torch.int64)
    positions = torch.arange(length, device=ends.device, dtype=torch.int64)
    # Number of documents that end at or before t = index of t's document.
    return torch.searchsorted(ends, positions, right=True)


def positions_in_documents(cu_seqlens: torch.Tensor, doc_T: torch.Tensor) -> torch.Tensor:
    """(T,) int64 position of every token inside its document, restarting at 0 at each document start.

    Args:
        cu_seqlens: (D+1,) int cumulative document lengths, cu_seqlens[-1] == T.
        doc_T: (T,) the tokens' document ids (`document_ids(cu_seqlens, T)`), passed in so a
            caller that keeps them computes them once.
    """
    starts_D = cu_seqlens[:-1].to(device=doc_T.device, dtype=torch.int64)
    return torch.arange(doc_T.numel(), device=doc_T.device) - starts_D[doc_T]


class AttentionKernel:
    """How attention runs; subclasses register in `flexbert.model.attention.kernels`.

    `window` is the half-width of sliding-window attention: a query at position i
    sees keys j of its own document with |i - j| <= window (HF ModernBERT's
    `local_attention = 128` is window 64: 129 keys). None means global attention.
    """

    name: ClassVar[str]
    supports_dropout: ClassVar[bool] = True

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str | None:
        """Why this kernel cannot run on `device` / `dtype` with heads of `head_dim`, or None when it can.

        Every limit of a kernel (device, dtype, head dim) lives here, so that the model resolves a
        kernel that can run at build time and preflight refuses one that cannot, before any data.
        `head_dim` None: the limits that do not depend on it.
        """
        return None

    def backward_unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this kernel cannot compute gradients (train) on `device` / `dtype`, or None when it can.

        Asked only where `unavailable_reason` is None and gradients are needed
        (`resolve_kernel(..., needs_backward=True)`, i.e. training). A kernel with a
        reason here still runs forward there (inference); its backward must raise
        an error carrying this reason, never return wrong or missing gradients.
        """
        return None

    def __call__(
        self,
        q_TNH: torch.Tensor,
        k_TNH: torch.Tensor,
        v_TNH: torch.Tensor,
        seqs: PackedSeqInfo,
        window: int | None,
        dropout_p: float,
        scale: float,
    ) -> torch.Tensor:
        """Return the attention output, shape (T, N, H), same dtype as q."""
        raise NotImplementedError


def flash_head_dim_reason(head_dim: int | None) -> str | None:
    """Why FlashAttention-2 kernels cannot take heads of `head_dim` (> 256), or None."""
    if head_dim is not None and head_dim > FLASH_MAX_HEAD_DIM:
        return f"head dim {head_dim} is above FlashAttention's {FLASH_MAX_HEAD_DIM}"
    return None


def flash_hardware_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why a FlashAttention kernel cannot run on `device` / `dtype` (CUDA, fp16/bf16, sm80+), or None."""
    if device.type != "cuda":
        return "needs CUDA"
    if not torch.cuda.is_available():
        return "needs CUDA (torch.cuda.is_available() is False)"
    if dtype not in (torch.float16, torch.bfloat16):
        return "needs fp16 or bf16"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return "needs an sm80+ GPU (Ampere or newer)"
    return None
