"""`flash_attn`: the optional flash-attn package's varlen kernel (fastest on CUDA).

Shape legend: T packed tokens, N heads, H head dim, D documents.

flash-attn is imported only inside the kernel body: importing this module, and
`import flexbert`, must work where flash-attn is not installed (or is blocked with
`sys.modules["flash_attn"] = None`).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util

import torch
from packaging.version import InvalidVersion, Version

from flexbert.model.registries import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo, flash_hardware_reason, flash_head_dim_reason

__all__ = ["FlashAttnKernel"]

_MIN_VERSION = Version("2.3")  # first release with window_size (sliding windows)


def _flash_attn_version() -> Version | None:
    """Installed flash-attn version, or None when the metadata cannot tell."""
    for dist in ("flash-attn", "flash_attn"):
        try:
            return Version(importlib.metadata.version(dist))
        except (importlib.metadata.PackageNotFoundError, InvalidVersion):
            continue
    return None


def _flash_attn_installed() -> bool:
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


@KERNELS.register("flash_attn")
class FlashAttnKernel(AttentionKernel):
    """flash-attn's flash_attn_varlen_func; CUDA, fp16/bf16, window and dropout."""

    name = "flash_attn"
    supports_dropout = True

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str | None:
        """Why the flash-attn package cannot run on `device` / `dtype` / `head_dim`, or None."""
        device = torch.device(device)
        if not _flash_attn_installed():
            return "flash-attn not installed"
        version = _flash_attn_version()
        if version is not None and version < _MIN_VERSION:
            return f"flash-attn {version} too old: needs >= {_MIN_VERSION} for sliding windows"
        return flash_head_dim_reason(head_dim) or flash_hardware_reason(device, dtype)

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
        from flash_attn import flash_attn_varlen_func

        cu = seqs.cu_seqlens.to(device=q_TNH.device, dtype=torch.int32)
        return flash_attn_varlen_func(
            q_TNH, k_TNH, v_TNH, cu, cu, seqs.max_seqlen, seqs.max_seqlen,
            dropout_p=dropout_p, softmax_scale=scale, causal=False,
            window_size=(-1, -1) if window is None else (window, window),
        )
