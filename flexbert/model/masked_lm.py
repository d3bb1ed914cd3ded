"""FlexBertForMaskedLM: encoder + prediction head + decoder, with a sparse MLM head.

Shape legend: B sequences, S padded length, T packed tokens, M labelled tokens, D hidden, V vocab.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.encoder import FlexBertModel
from flexbert.model.heads import FlexBertPredictionHead
from flexbert.model.init import init_weights
from flexbert.model.packing import pack_inputs, repad

__all__ = ["FlexBertForMaskedLM", "MaskedLMOutput", "IGNORE_INDEX", "masked_lm_loss"]

IGNORE_INDEX = -100


@dataclasses.dataclass
class MaskedLMOutput:
    """Result of FlexBertForMaskedLM.

    Attributes:
        loss: mean cross-entropy over labels != -100 (0 when there are none); None without labels.
        logits: (M, V) labelled rows when sparse prediction ran; else (B, S, V) padded or (T, V) packed.
        labels: the labels aligned with the rows of logits ((M,), (B, S) or (T,)); None without labels.
    """

    loss: torch.Tensor | None
    logits: torch.Tensor
    labels: torch.Tensor | None = None


def masked_lm_loss(logits_MV: torch.Tensor, labels_M: torch.Tensor) -> torch.Tensor:
    """Mean CE (fp32) over labels != -100; 0 (with a graph) when no label is set, instead of NaN.

    Summing then dividing by the clamped count avoids a host sync on the count.
    """
    total = F.cross_entropy(logits_MV.float(), labels_M, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (labels_M != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


class FlexBertForMaskedLM(nn.Module):
    """Masked language model; weight names match HF ModernBertForMaskedLM (model., head., decoder.)."""

    init_roles: ClassVar[dict[str, str]] = {"decoder": "out"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.config = config
        self.model = FlexBertModel(config, init=False)
        self.head = FlexBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        if config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight
        init_weights(self, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, position_ids: torch.Tensor | None = None) -> MaskedLMOutput:
        """Predict tokens; with labels and config.sparse_prediction the head runs only on labelled rows.

        Args:
            input_ids: (B, S) padded or (T,) packed.
            attention_mask: (B, S), padded input only.
            labels: same shape as input_ids; -100 where no loss applies (padding is never scored).
            cu_seqlens: (D+1,) int32 document boundaries, packed input only.
            max_seqlen: longest document (packed input).
            position_ids: same shape as input_ids; default restarts at 0 per document.
        Returns:
            MaskedLMOutput; logits (M, V) in sparse mode, else (B, S, V) padded (zeros at padding,
            where the head never runs) or (T, V) packed.
        """
        packed = pack_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        h_TD = self.model.encode(packed)
        labels_T = packed.flatten_like_input(labels) if labels is not None else None
        if labels_T is not None and self.config.sparse_prediction:
            keep_T = labels_T != IGNORE_INDEX
            labels_M = labels_T[keep_T]
            logits_MV = self.decoder(self.head(h_TD[keep_T]))
            return MaskedLMOutput(loss=masked_lm_loss(logits_MV, labels_M), logits=logits_MV, labels=labels_M)
        logits_TV = self.decoder(self.head(h_TD))
        loss = masked_lm_loss(logits_TV, labels_T) if labels_T is not None else None
        return MaskedLMOutput(loss=loss, logits=repad(logits_TV, packed), labels=labels)
