"""The attention block and its variants (model.attention): what attention computes.

Shape legend: T packed tokens, D hidden size, N heads, H head dim (D = N * H).

Wqkv (fused, rows [q all heads; k all heads; v all heads], each head contiguous, as HF)
-> optional rotation of q and k (`rope`) or none (`plain`)
-> the attention kernel (how it runs; chosen once per device, see FlexBertModel)
-> Wo -> dropout (attn_out_dropout; ModernBERT trained with 0.1 here).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig, LayerSpec
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo
from flexbert.model.attention.rope import apply_rope, rope_cos_signed_sin
from flexbert.model.registries import ATTENTIONS

__all__ = ["PlainAttention", "RopeAttention", "build_attention"]


@ATTENTIONS.register("plain")
class PlainAttention(nn.Module):
    """Multi-head self-attention over packed documents, no position rotation."""

    init_roles: ClassVar[dict[str, str]] = {"Wqkv": "in", "Wo": "out"}
    # Logical axes of the structured weights (flexbert/train/tiling.py grows each axis on its own):
    # q, k and v separately, heads as whole heads.
    tile_axes: ClassVar[dict[str, tuple[str | int, ...]]] = {
        "Wqkv.weight": (3, "heads", "head_dim", "hidden"),
        "Wqkv.bias": (3, "heads", "head_dim"),
        "Wo.weight": ("hidden", "heads", "head_dim"),
    }

    def __init__(self, config: FlexBertConfig, spec: LayerSpec):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.window = spec.window
        self.rope_theta = spec.rope_theta
        self.attention_dropout = config.attention_dropout
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attn_out_dropout)

    def extra_forward_flops(self, seq_len: int) -> float:
        """Forward FLOPs per token beyond the projections: scores (Q K^T) and mixing (P V) over the context."""
        context = seq_len if self.window is None else min(seq_len, 2 * self.window + 1)
        return 4.0 * self.num_heads * self.head_dim * context

    def rotate(self, qk_T2NH: torch.Tensor, seqs: PackedSeqInfo, position_ids_T: torch.Tensor) -> torch.Tensor:
        """Add position information to q and k (stacked on dim 1); none for plain attention."""
        return qk_T2NH

    def forward(self, x_TD: torch.Tensor, seqs: PackedSeqInfo, position_ids_T: torch.Tensor,
                kernel: AttentionKernel) -> torch.Tensor:
        """Attend within each document (and window).

        Args:
            x_TD: (T, D) normalised hidden states.
            seqs: document boundaries of the pack.
            position_ids_T: (T,) positions restarting at 0 per document.
            kernel: the resolved attention kernel.
        Returns:
            (T, D).
        """
        T = x_TD.shape[0]
        qkv_T3NH = self.Wqkv(x_TD).view(T, 3, self.num_heads, self.head_dim)
        # q and k are rotated together, straight from the fused projection (no per-tensor copies).
        q_TNH, k_TNH = self.rotate(qkv_T3NH[:, :2], seqs, position_ids_T).unbind(dim=1)
        v_TNH = qkv_T3NH[:, 2]
        dropout_p = self.attention_dropout if self.training else 0.0
        out_TNH = kernel(q_TNH, k_TNH, v_TNH, seqs, self.window, dropout_p, self.head_dim ** -0.5)
        return self.out_drop(self.Wo(out_TNH.reshape(T, self.num_heads * self.head_dim)))


@ATTENTIONS.register("rope")
class RopeAttention(PlainAttention):
    """Self-attention with rotary position embeddings (HF ModernBertAttention)."""

    def rotate(self, qk_T2NH: torch.Tensor, seqs: PackedSeqInfo, position_ids_T: torch.Tensor) -> torch.Tensor:
        """Rotate q and k (one pass over both) by their positions with this layer's theta."""
        cos_TH, ssin_TH = rope_cos_signed_sin(seqs, position_ids_T, self.head_dim, self.rope_theta)
        return apply_rope(qk_T2NH, cos_TH, ssin_TH, signed_sin=True)


def build_attention(config: FlexBertConfig, spec: LayerSpec) -> nn.Module:
    """Return the configured attention block for a layer of type `spec`."""
    return ATTENTIONS.get(config.attention, "model.attention")(config, spec)
