"""Helpers on packed batches: padding rows to the budget, splitting by rows, counting, unpacking.

A packed batch (`flexbert.data.packed_batch.PackedBatch`) holds R rows of whole documents back
to back; rows are what gradient accumulation splits, since a document never crosses a row
boundary. Every helper takes a PackedBatch or a Mapping with its field names.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from flexbert.data.masking import IGNORE_INDEX
from flexbert.data.packed_batch import TOKEN_FIELDS, PackedBatch

__all__ = ["pad_rows", "split_packed_batch", "num_samples", "num_tokens", "packed_to_padded"]


def _seqlens(cu: torch.Tensor) -> torch.Tensor:
    return (cu[1:] - cu[:-1]).to(torch.int64)


def pad_rows(batch: PackedBatch | Mapping[str, Any], max_seq_len: int, pad_token_id: int) -> PackedBatch:
    """Pad every row to `max_seq_len` tokens; the padding of a row is its own attention segment.

    Args:
        batch: packed batch (labels optional); input_ids (T,), row_offsets (R+1,).
        max_seq_len: row length after padding (T becomes R * max_seq_len).
        pad_token_id: id written into padding (positions restart at 0, labels -100).
    Returns:
        a new packed batch; `num_tokens` and `row_num_tokens` still count real tokens only.
    """
    batch = PackedBatch.coerce(batch)
    offsets = batch["row_offsets"].tolist()
    cu = batch["cu_seqlens"].to(torch.int64)
    pieces = {k: [] for k in TOKEN_FIELDS if k in batch}
    seg_lens: list[torch.Tensor] = []
    for r in range(len(offsets) - 1):
        t0, t1 = offsets[r], offsets[r + 1]
        d0, d1 = torch.searchsorted(cu, torch.tensor([t0, t1])).tolist()
        seg_lens.append(_seqlens(cu[d0 : d1 + 1]))
        for k in pieces:
            pieces[k].append(batch[k][t0:t1])
        gap = max_seq_len - (t1 - t0)
        if gap > 0:
            seg_lens.append(torch.tensor([gap]))
            fill = {"input_ids": torch.full((gap,), pad_token_id), "labels": torch.full((gap,), IGNORE_INDEX), "position_ids": torch.arange(gap)}
            for k in pieces:
                pieces[k].append(fill[k].to(batch[k].dtype))
    lens = torch.cat(seg_lens) if seg_lens else torch.zeros(0, dtype=torch.int64)
    new_cu = torch.zeros(len(lens) + 1, dtype=torch.int64)
    torch.cumsum(lens, 0, out=new_cu[1:])
    return batch.replace(
        **{k: torch.cat(v) if v else batch[k] for k, v in pieces.items()},
        cu_seqlens=new_cu.to(torch.int32),
        max_seqlen=int(lens.max()) if len(lens) else 0,
        row_offsets=torch.arange(len(offsets), dtype=torch.int64) * max_seq_len,
    )


def split_packed_batch(batch: PackedBatch | Mapping[str, Any], rows_per_microbatch: int) -> list[PackedBatch]:
    """Split a packed batch into microbatches of `rows_per_microbatch` rows (the last may be smaller).

    Args:
        batch: packed batch with R rows.
        rows_per_microbatch: rows per piece (>= 1).
    Returns:
        list of packed batches with re-based cu_seqlens / row_offsets; concatenating their
        token tensors gives back the original ones.
    """
    if rows_per_microbatch < 1:
        raise ValueError(f"rows_per_microbatch must be >= 1, got {rows_per_microbatch}")
    batch = PackedBatch.coerce(batch)
    offsets = batch.row_offsets
    cu = batch.cu_seqlens.to(torch.int64)
    out = []
    for a in range(0, batch.num_rows, rows_per_microbatch):
        b = min(batch.num_rows, a + rows_per_microbatch)
        t0, t1 = int(offsets[a]), int(offsets[b])
        d0, d1 = torch.searchsorted(cu, torch.tensor([t0, t1])).tolist()
        sub_cu = cu[d0 : d1 + 1] - t0
        row_num_tokens = batch.row_num_tokens[a:b]
        out.append(batch.replace(
            **{k: batch[k][t0:t1] for k in TOKEN_FIELDS if k in batch},
            cu_seqlens=sub_cu.to(torch.int32),
            max_seqlen=int(_seqlens(sub_cu).max()) if len(sub_cu) > 1 else 0,
            row_offsets=offsets[a : b + 1] - t0,
            row_num_tokens=row_num_tokens,
            num_tokens=int(row_num_tokens.sum()),
        ))
    return out


def num_samples(batch: PackedBatch | Mapping[str, Any]) -> int:
    """Rows in a packed batch (Composer's `get_num_samples_in_batch`)."""
    return len(batch["row_offsets"]) - 1


def num_tokens(batch: PackedBatch | Mapping[str, Any]) -> int:
    """Real (non-pad) tokens in a packed batch (Composer's `get_num_tokens_in_batch`)."""
    return int(batch["num_tokens"])


def packed_to_padded(batch: PackedBatch | Mapping[str, Any], pad_token_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One padded row per document (padding segments from `pad_rows` dropped).

    Args:
        batch: packed batch.
        pad_token_id: fill value of input_ids beyond each document.
    Returns:
        input_ids (D, S) int64, attention_mask (D, S) int64 (1 on real tokens), labels (D, S)
        with -100 fill (None when the batch has no labels); S is the longest document.
    """
    cu = batch["cu_seqlens"].to(torch.int64)
    starts, lens = cu[:-1], _seqlens(cu)
    if "row_num_tokens" in batch:
        # Padding segments start at or after the real end of their row.
        row_real_end = batch["row_offsets"][:-1] + batch["row_num_tokens"]
        row_of_doc = torch.searchsorted(batch["row_offsets"], starts, right=True) - 1
        keep = starts < row_real_end[row_of_doc]
        starts, lens = starts[keep], lens[keep]
    d, s = len(lens), int(lens.max()) if len(lens) else 0
    col = torch.arange(s)
    attention_mask = col[None, :] < lens[:, None]
    src = (starts[:, None] + col[None, :]).clamp(max=max(0, len(batch["input_ids"]) - 1))
    ids = torch.where(attention_mask, batch["input_ids"][src] if d else src, torch.tensor(pad_token_id))
    labels = None
    if "labels" in batch:
        labels = torch.where(attention_mask, batch["labels"][src] if d else src, torch.tensor(IGNORE_INDEX))
    return ids, attention_mask.to(torch.int64), labels
