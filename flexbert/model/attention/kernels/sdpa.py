"""Attention through torch.nn.functional.scaled_dot_product_attention on a padded view of the pack.

Shape legend: T packed tokens, N heads, H head dim, D documents, L = max_seqlen.

The pack is scattered into (D, N, L, H) and attended with one boolean mask
(True = may attend) combining key padding and, for local layers, the window
|i - j| <= window. Runs on any device and dtype; the fast choice on CPU.
The layout (document id and position of each token) and the masks are built once
per forward and kept in `seqs.cache` for every layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flexbert.model.attention.kernels import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo

__all__ = ["SdpaKernel", "dense_layout", "dense_mask"]


def dense_layout(seqs: PackedSeqInfo, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (doc_T, pos_T, len_D): each token's document and position, each document's length (int64)."""
    layout = seqs.cache.get("sdpa:layout")
    if layout is None:
        cu = seqs.cu_seqlens.to(device=device, dtype=torch.int64)
        len_D = cu[1:] - cu[:-1]
        T = seqs.total_tokens
        doc_T = torch.repeat_interleave(torch.arange(len_D.numel(), device=device), len_D, output_size=T)
        pos_T = torch.arange(T, device=device) - cu[:-1][doc_T]
        layout = (doc_T, pos_T, len_D)
        seqs.cache["sdpa:layout"] = layout
    return layout


def dense_mask(seqs: PackedSeqInfo, window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean mask broadcastable to (D, N, L, L): True where query i may attend key j.

    Padding queries (i >= len) ignore the window so that every row has a key (a row with
    none would give NaN, harmless forward but poisonous in backward); their outputs are dropped.
    """
    key = f"sdpa:mask:{window}"
    mask = seqs.cache.get(key)
    if mask is None:
        _, _, len_D = dense_layout(seqs, device)
        L = seqs.max_seqlen
        idx_L = torch.arange(L, device=device)
        # clamp(min=1): an empty document still gets one (discarded) key.
        key_ok_D11L = (idx_L[None, :] < len_D.clamp(min=1)[:, None])[:, None, None, :]
        if window is None:
            mask = key_ok_D11L
        else:
            near_LL = (idx_L[:, None] - idx_L[None, :]).abs() <= window
            query_pad_D1L1 = (idx_L[None, :] >= len_D[:, None])[:, None, :, None]
            mask = key_ok_D11L & (near_LL[None, None] | query_pad_D1L1)
        seqs.cache[key] = mask
    return mask


@KERNELS.register("sdpa")
class SdpaKernel(AttentionKernel):
    """PyTorch SDPA over documents padded to max_seqlen, with a padding (+ window) mask."""

    name = "sdpa"
    supports_dropout = True

    def __call__(self, q_TNH: torch.Tensor, k_TNH: torch.Tensor, v_TNH: torch.Tensor, seqs: PackedSeqInfo,
                 window: int | None, dropout_p: float, scale: float) -> torch.Tensor:
        device = q_TNH.device
        doc_T, pos_T, len_D = dense_layout(seqs, device)
        D, L = len_D.numel(), seqs.max_seqlen
        N, H = q_TNH.shape[1:]

        def to_dense(x_TNH: torch.Tensor) -> torch.Tensor:
            x_DLNH = x_TNH.new_zeros(D, L, N, H).index_put((doc_T, pos_T), x_TNH)
            return x_DLNH.transpose(1, 2)

        out_DNLH = F.scaled_dot_product_attention(
            to_dense(q_TNH), to_dense(k_TNH), to_dense(v_TNH),
            attn_mask=dense_mask(seqs, window, device), dropout_p=dropout_p, scale=scale)
        return out_DNLH.transpose(1, 2)[doc_T, pos_T]
