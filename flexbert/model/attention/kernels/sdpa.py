"""Attention through torch.nn.functional.scaled_dot_product_attention over the pack.

Shape legend: T packed tokens, N heads, H head dim, D documents, L = max_seqlen,
Q query rows per block, S = Q + 2 * window keys per block, B blocks.

Three layouts, chosen per batch and window by their attention cost (`sdpa_plan`):
- `blocked` (local layers): the pack is cut into B = ceil(T / Q) blocks of Q queries; block b
  attends the S pack positions [b Q - window, (b + 1) Q + window), taken from k and v padded by
  `window` rows on each side as overlapping strided views (`unfold`, no copy), with one additive
  mask (same document and |i - j| <= window; positions outside the pack masked). Cost ~ T x S
  scores instead of D x L x L, and no padding to the longest document.
- `per_doc` (global layers, few documents): one SDPA call per document on views of the pack
  (`split`, no copy, no mask); cost sum(len^2) instead of D x L x L.
- `dense` (otherwise): the pack is gathered into (D, L, N, H) blocks (one `index_select` per
  q/k/v, viewed as (D, N, L, H) without a copy) and attended with one mask combining key padding
  and, for local layers, the window |i - j| <= window; the output is gathered back with one
  `index_select`.
Runs on any device and dtype; the fast choice on CPU. Gather indices, masks and the plan are
built once per forward and kept in `seqs.cache` for every layer. Masks are handed to SDPA
already additive (0 / -inf in q's dtype), exactly what SDPA would build from a boolean mask on
every call.

Padding slots (dense blocks, blocked tails) point at real tokens or zero rows; they are masked
out as keys (softmax weight exactly 0) and dropped as queries, and every padded query row keeps
at least one allowed key, so that no row is all -inf (NaN, poisonous in backward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flexbert.model.registries import KERNELS
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo, document_ids, positions_in_documents
from flexbert.model.attention.kernels.eager import host_cu_seqlens

__all__ = ["SdpaKernel", "dense_layout", "dense_mask", "dense_gather_index", "dense_additive_mask", "sdpa_plan",
           "block_rows", "blocked_additive_mask", "MAX_PER_DOC_CALLS"]

#: The per_doc layout makes one SDPA call per document: above this many documents the dense
#: layout's single call is kept (the per-call overhead would grow with the document count).
MAX_PER_DOC_CALLS = 64


def dense_layout(seqs: PackedSeqInfo, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (doc_T, pos_T, len_D): each token's document and position, each document's length (int64)."""
    layout = seqs.cache.get("sdpa:layout")
    if layout is None:
        cu = seqs.cu_seqlens.to(device=device, dtype=torch.int64)
        len_D = cu[1:] - cu[:-1]
        T = seqs.total_tokens
        doc_T = document_ids(cu, T, device)
        pos_T = positions_in_documents(cu, doc_T)
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


def block_rows(window: int) -> int:
    """Q, the queries per block of the blocked layout: the window's power of two in [16, 64]."""
    q = 16
    while q < window and q < 64:
        q *= 2
    return q


def sdpa_plan(seqs: PackedSeqInfo, window: int | None) -> str:
    """The layout for this batch and window: "blocked", "per_doc" or "dense" (module docstring).

    Costs are counted in attention scores per head: dense D x L x L; blocked B x Q x S;
    per_doc sum of len^2. A layout is taken only when it computes fewer scores than dense.
    """
    key = f"sdpa:plan:{window}"
    plan = seqs.cache.get(key)
    if plan is None:
        bounds = host_cu_seqlens(seqs)
        lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        T, D, L = bounds[-1], len(lengths), seqs.max_seqlen
        dense = D * L * L
        plan = "dense"
        if T == 0:
            pass
        elif window is not None:
            Q = block_rows(window)
            if -(-T // Q) * Q * (Q + 2 * window) < dense:
                plan = "blocked"
        elif D <= MAX_PER_DOC_CALLS and sum(n * n for n in lengths) < dense:
            plan = "per_doc"
        seqs.cache[key] = plan
    return plan


def blocked_additive_mask(seqs: PackedSeqInfo, window: int, dtype: torch.dtype,
                          device: torch.device) -> torch.Tensor:
    """(B, 1, Q, S) additive mask of the blocked layout: 0 where query b Q + i may see pack key b Q - window + s.

    Real queries see keys of their own document with |i - j| <= window; queries past the end of
    the pack (the last block's tail) see every key inside the pack, so no row is empty.
    """
    key = f"sdpa:blocked:{window}:{dtype}"
    mask = seqs.cache.get(key)
    if mask is None:
        doc_T, _, _ = dense_layout(seqs, device)
        T = seqs.total_tokens
        Q = block_rows(window)
        B, S = -(-T // Q), Q + 2 * window
        i_BQ1 = torch.arange(B * Q, device=device).view(B, Q, 1)
        j_B1S = (torch.arange(B, device=device) * Q - window).view(B, 1, 1) + torch.arange(S, device=device).view(1, 1, S)
        key_in_BQS = ((j_B1S >= 0) & (j_B1S < T)).expand(B, Q, S)
        same_doc = doc_T[i_BQ1.clamp(max=T - 1)] == doc_T[j_B1S.clamp(0, T - 1)]
        near = (i_BQ1 - j_B1S).abs() <= window
        allowed = key_in_BQS & ((same_doc & near) | (i_BQ1 >= T))
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))[:, None]
        seqs.cache[key] = mask
    return mask


def _blocked(q_TNH, k_TNH, v_TNH, seqs, window, dropout_p, scale):
    """The blocked layout (local layers): B blocks of Q queries, S = Q + 2 window keys each."""
    T, N, H = q_TNH.shape
    Q = block_rows(window)
    B = -(-T // Q)
    S = Q + 2 * window
    tail = B * Q - T
    q_BQNH = (F.pad(q_TNH, (0, 0, 0, 0, 0, tail)) if tail else q_TNH).reshape(B, Q, N, H)

    def windows(x_TNH: torch.Tensor) -> torch.Tensor:
        # rows [-window, T + tail + window) of the pack (zeros outside) -> (B, N, S, H) overlapping views
        return F.pad(x_TNH, (0, 0, 0, 0, window, tail + window)).unfold(0, S, Q).permute(0, 1, 3, 2)

    out_BNQH = F.scaled_dot_product_attention(
        q_BQNH.transpose(1, 2), windows(k_TNH), windows(v_TNH),
        attn_mask=blocked_additive_mask(seqs, window, q_TNH.dtype, q_TNH.device), dropout_p=dropout_p, scale=scale)
    # SDPA returns q's layout, (B, Q, N, H) in memory: this reshape is a view
    return out_BNQH.transpose(1, 2).reshape(B * Q, N, H)[:T]


def _per_doc(q_TNH, k_TNH, v_TNH, seqs, dropout_p, scale):
    """The per_doc layout (global layers): one unmasked SDPA call per document on views of the pack."""
    bounds = host_cu_seqlens(seqs)
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    outs = []
    for q_LNH, k_LNH, v_LNH in zip(q_TNH.split(lengths), k_TNH.split(lengths), v_TNH.split(lengths)):
        if q_LNH.shape[0] == 0:
            continue  # an empty document: nothing to attend, nothing to return
        out_1NLH = F.scaled_dot_product_attention(
            q_LNH.transpose(0, 1)[None], k_LNH.transpose(0, 1)[None], v_LNH.transpose(0, 1)[None],
            dropout_p=dropout_p, scale=scale)
        outs.append(out_1NLH[0].transpose(0, 1))
    return torch.cat(outs, dim=0)


def _dense(q_TNH, k_TNH, v_TNH, seqs, window, dropout_p, scale):
    """The dense layout: documents gathered into (D, L) blocks, one masked SDPA call."""
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


@KERNELS.register("sdpa")
class SdpaKernel(AttentionKernel):
    """PyTorch SDPA over the pack: blocked (local), per-document (global) or padded-dense layout."""

    name = "sdpa"
    supports_dropout = True

    def __call__(self, q_TNH: torch.Tensor, k_TNH: torch.Tensor, v_TNH: torch.Tensor, seqs: PackedSeqInfo,
                 window: int | None, dropout_p: float, scale: float) -> torch.Tensor:
        plan = sdpa_plan(seqs, window)
        if plan == "blocked":
            return _blocked(q_TNH, k_TNH, v_TNH, seqs, window, dropout_p, scale)
        if plan == "per_doc":
            return _per_doc(q_TNH, k_TNH, v_TNH, seqs, dropout_p, scale)
        return _dense(q_TNH, k_TNH, v_TNH, seqs, window, dropout_p, scale)
