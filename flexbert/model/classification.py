"""FlexBertForSequenceClassification: encoder, pooling, head, classifier (HF names: model., head., classifier.).

Shape legend: B sequences (documents), T packed tokens, D hidden, C num_labels.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.encoder import FlexBertModel
from flexbert.model.heads import FlexBertPredictionHead, pool
from flexbert.model.init import init_weights
from flexbert.model.packing import pack_inputs

__all__ = ["FlexBertForSequenceClassification", "SequenceClassifierOutput"]


@dataclasses.dataclass
class SequenceClassifierOutput:
    """Attributes: loss (None without labels); logits (B, C), one row per document."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class FlexBertForSequenceClassification(nn.Module):
    """Classify or regress whole documents from a pooled encoder output."""

    init_roles: ClassVar[dict[str, str]] = {"classifier": "final_out"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.config = config
        self.model = FlexBertModel(config, init=False)
        self.head = FlexBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self, config)

    def problem_type(self, labels: torch.Tensor) -> str:
        """config.problem_type, or HF's inference from num_labels and the label dtype (config untouched)."""
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.config.num_labels == 1:
            return "regression"
        if labels.dtype in (torch.long, torch.int):
            return "single_label_classification"
        return "multi_label_classification"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, position_ids: torch.Tensor | None = None) -> SequenceClassifierOutput:
        """Score every document.

        Args:
            input_ids: (B, S) padded or (T,) packed (B = number of documents in cu_seqlens).
            attention_mask: (B, S), padded input only; mean pooling ignores padding.
            labels: (B,) int class ids, (B,) / (B, 1) floats for regression, (B, C) floats multi-label.
            cu_seqlens, max_seqlen, position_ids: as FlexBertModel.forward.
        """
        packed = pack_inputs(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        h_TD = self.model.encode(packed)
        pooled_BD = pool(self.config.classifier_pooling, h_TD, packed.seqs)
        logits_BC = self.classifier(self.drop(self.head(pooled_BD)))
        loss = None
        if labels is not None:
            kind = self.problem_type(labels)
            if kind == "regression":
                loss = F.mse_loss(logits_BC.float().reshape(labels.shape[0], -1).squeeze(-1),
                                  labels.float().reshape(labels.shape[0], -1).squeeze(-1))
            elif kind == "single_label_classification":
                loss = F.cross_entropy(logits_BC.float(), labels.view(-1).long())
            else:
                loss = F.binary_cross_entropy_with_logits(logits_BC.float(), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits_BC)
