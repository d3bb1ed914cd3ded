"""Padded <-> packed conversion, done once at the model's entry and exit.

Shape legend: B sequences, S padded length, T packed (real) tokens, D documents.

Blocks only ever see packed tokens (T, ...) plus one PackedSeqInfo per forward.
"""
from __future__ import annotations

import dataclasses

import torch

from flexbert.model.attention.kernels.base import PackedSeqInfo, document_ids, positions_in_documents

__all__ = ["PackedInputs", "pack_inputs", "repad"]


@dataclasses.dataclass
class PackedInputs:
    """Model inputs in packed form, and how to re-pad outputs for padded callers.

    Attributes:
        input_ids_T: (T,) token ids.
        position_ids_T: (T,) position of each token inside its document.
        seqs: document boundaries (one per padded row, or the caller's cu_seqlens).
        indices_T: (T,) flat indices into (B*S) of the real tokens; None for packed callers.
        batch_shape: (B, S) for padded callers; None for packed callers.
    """

    input_ids_T: torch.Tensor
    position_ids_T: torch.Tensor
    seqs: PackedSeqInfo
    indices_T: torch.Tensor | None = None
    batch_shape: tuple[int, int] | None = None

    @property
    def padded(self) -> bool:
        return self.batch_shape is not None

    def flatten_like_input(self, per_token: torch.Tensor) -> torch.Tensor:
        """Select the real tokens of a (B, S, ...) tensor (padded callers) or return a (T, ...) one."""
        if self.indices_T is None:
            return per_token
        return per_token.reshape(-1, *per_token.shape[2:])[self.indices_T]


def pack_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                position_ids: torch.Tensor | None = None) -> PackedInputs:
    """Bring padded (B, S) or packed (T,) inputs to packed form.

    Args:
        input_ids: (B, S) padded rows (each row one document) or (T,) packed documents.
        attention_mask: (B, S), 1/True for real tokens; padded input only. None = all real.
        cu_seqlens: (D+1,) document boundaries; packed input only. None = one document.
        max_seqlen: longest document; computed from cu_seqlens when None.
        position_ids: (B, S) or (T,) positions; computed (restarting per document) when None.
    """
    if input_ids.dim() == 2:
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens is for packed (T,) input_ids; padded (B, S) input takes attention_mask")
        B, S = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(B, S, dtype=torch.bool, device=input_ids.device)
        mask_BS = attention_mask.bool()
        seqlens_B = mask_BS.sum(dim=1, dtype=torch.int32)
        indices_T = torch.nonzero(mask_BS.flatten(), as_tuple=False).flatten()
        cu = torch.zeros(B + 1, dtype=torch.int32, device=input_ids.device)
        cu[1:] = torch.cumsum(seqlens_B, dim=0)
        if position_ids is None:
            # Counting real tokens makes positions start at 0 on the first real token (left or right padding).
            position_ids = mask_BS.long().cumsum(dim=1) - 1
        return PackedInputs(
            input_ids_T=input_ids.flatten()[indices_T],
            position_ids_T=position_ids.flatten()[indices_T].long(),
            seqs=PackedSeqInfo(cu_seqlens=cu, max_seqlen=int(seqlens_B.max()) if B else 0),
            indices_T=indices_T,
            batch_shape=(B, S),
        )
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be (B, S) padded or (T,) packed, got shape {tuple(input_ids.shape)}")
    if attention_mask is not None:
        raise ValueError("attention_mask is for padded (B, S) input_ids; packed (T,) input takes cu_seqlens")
    T = input_ids.shape[0]
    if cu_seqlens is None:
        cu_seqlens = torch.tensor([0, T], dtype=torch.int32, device=input_ids.device)
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be (D+1,) document boundaries, got shape {tuple(cu_seqlens.shape)}")
    cu_seqlens = cu_seqlens.to(device=input_ids.device, dtype=torch.int32)
    if max_seqlen is None:
        if int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != T:
            raise ValueError(f"cu_seqlens must start at 0 and end at T={T}, got {cu_seqlens.tolist()}")
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    if position_ids is None:
        position_ids = positions_in_documents(cu_seqlens, document_ids(cu_seqlens, T))
    return PackedInputs(input_ids_T=input_ids, position_ids_T=position_ids.long(),
                        seqs=PackedSeqInfo(cu_seqlens=cu_seqlens, max_seqlen=int(max_seqlen)))


def repad(x_T: torch.Tensor, packed: PackedInputs) -> torch.Tensor:
    """Scatter (T, ...) packed outputs back to (B, S, ...), zeros at padding; identity for packed callers."""
    if packed.batch_shape is None:
        return x_T
    B, S = packed.batch_shape
    out = x_T.new_zeros(B * S, *x_T.shape[1:])
    out = out.index_put((packed.indices_T,), x_T)
    return out.view(B, S, *x_T.shape[1:])
