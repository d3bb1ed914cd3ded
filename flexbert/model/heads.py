"""Output heads: the MLM prediction head and the sequence pooling variants (model.classifier_pooling).

Shape legend: T packed tokens, D hidden size, B documents (sequences).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.activations import build_activation
from flexbert.model.attention.kernels.base import PackedSeqInfo
from flexbert.model.norms import build_norm
from flexbert.model.registries import POOLINGS

__all__ = ["FlexBertPredictionHead", "pool"]


class FlexBertPredictionHead(nn.Module):
    """norm(act(dense(h))) before the decoder / classifier (HF ModernBertPredictionHead)."""

    init_roles: ClassVar[dict[str, str]] = {"dense": "out"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = build_activation(config.classifier_activation, "model.classifier_activation")
        # The configured norm (HF: LayerNorm, the same as its body's norm).
        self.norm = build_norm(config)

    def forward(self, h_TD: torch.Tensor) -> torch.Tensor:
        """Args: h_TD (..., D). Returns (..., D)."""
        return self.norm(self.act(self.dense(h_TD)))


@POOLINGS.register("cls")
def _cls_pool(h_TD: torch.Tensor, seqs: PackedSeqInfo) -> torch.Tensor:
    """The first token of every document: (B, D)."""
    return h_TD[seqs.cu_seqlens[:-1].long()]


@POOLINGS.register("mean")
def _mean_pool(h_TD: torch.Tensor, seqs: PackedSeqInfo) -> torch.Tensor:
    """The mean over the real tokens of every document: (B, D). Padding never enters the pack."""
    cu = seqs.cu_seqlens.long()
    len_B = cu[1:] - cu[:-1]
    doc_T = torch.repeat_interleave(torch.arange(len_B.numel(), device=h_TD.device), len_B, output_size=h_TD.shape[0])
    sums_BD = h_TD.new_zeros(len_B.numel(), h_TD.shape[1]).index_add(0, doc_T, h_TD)
    return sums_BD / len_B.clamp(min=1)[:, None].to(h_TD.dtype)


def pool(name: str, h_TD: torch.Tensor, seqs: PackedSeqInfo) -> torch.Tensor:
    """Pool packed hidden states (T, D) to one vector per document (B, D) with the variant `name`."""
    return POOLINGS.get(name, "model.classifier_pooling")(h_TD, seqs)
