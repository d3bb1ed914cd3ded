"""Attention through torch.nn.functional.scaled_dot_product_attention on a padded view of the pack.

Shape legend: T packed tokens, N heads, H head dim, D documents, L = max_seqlen.

The pack is gathered into (D, L, N, H) blocks (one `index_select` per q/k/v, viewed as
(D, N, L, H) without a copy) and attended with one mask combining key padding and, for
local layers, the window |i - j| <= window; the output is gathered back with one
`index_select`. Runs on any device and dtype; the fast choice on CPU.
The gather indices and the masks are built once per forward and kept in `seqs.cache`
for every layer. The mask is handed to SDPA already additive (0 / -inf in q's dtype),
exactly what SDPA would build from the boolean mask on every call.

Padding slots of the blocks point at a real token of the pack (never out of range);
they are masked out as keys (softmax weight exactly 0) and dropped as queries, so the
result does not depend on their content.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flexbert.model.registries import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo

__all__ = ["SdpaKernel", "dense_layout", "dense_mask", "dense_gather_index", "dense_additive_mask"]


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


def dense_gather_index(seqs: PackedSeqInfo, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pack_DL, dense_T), int64.

    pack_DL: (D*L,) for every slot (d, i) of the padded blocks the packed token it holds
        (cu[d] + i; padding slots hold a valid token index, masked later).
    dense_T: (T,) for every packed token its slot d * L + pos in the flattened blocks.
    """
    index = seqs.cache.get("sdpa:gather")
    if index is None:
        doc_T, pos_T, len_D = dense_layout(seqs, device)
        cu = seqs.cu_seqlens.to(device=device, dtype=torch.int64)
        L = seqs.max_seqlen
        T = seqs.total_tokens
        idx_L = torch.arange(L, device=device)
        real_DL = idx_L[None, :] < len_D[:, None]
        pack_DL = torch.where(real_DL, cu[:-1, None] + idx_L[None, :], 0).clamp(max=max(T - 1, 0)).flatten()
        dense_T = doc_T * L + pos_T
        index = (pack_DL, dense_T)
        seqs.cache["sdpa:gather"] = index
    return index


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


def dense_additive_mask(seqs: PackedSeqInfo, window: int | None, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
    """dense_mask as SDPA converts a boolean mask: 0 where allowed, -inf elsewhere, in `dtype`."""
    key = f"sdpa:additive:{window}:{dtype}"
    mask = seqs.cache.get(key)
    if mask is None:
        allowed = dense_mask(seqs, window, device)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
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
        pack_DL, dense_T = dense_gather_index(seqs, device)
        D, L = seqs.num_seqs, seqs.max_seqlen
        N, H = q_TNH.shape[1:]

        def to_dense(x_TNH: torch.Tensor) -> torch.Tensor:
            # (D*L, N, H) contiguous -> (D, N, L, H) view; SDPA takes the strides as they are.
            return x_TNH.index_select(0, pack_DL).view(D, L, N, H).transpose(1, 2)

        out_DNLH = F.scaled_dot_product_attention(
            to_dense(q_TNH), to_dense(k_TNH), to_dense(v_TNH),
            attn_mask=dense_additive_mask(seqs, window, q_TNH.dtype, device), dropout_p=dropout_p, scale=scale)
        return out_DNLH.transpose(1, 2).reshape(D * L, N, H).index_select(0, dense_T)
