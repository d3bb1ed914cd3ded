"""Token embeddings by name (model.embedding).

Shape legend: T packed tokens, D hidden size.

- modernbert: dropout(norm(tok_embeddings(ids))), no positions (RoPE adds them in attention).
- absolute:   dropout(norm(tok_embeddings(ids) + position_embeddings(pos))), BERT's learned positions.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.norms import build_norm
from flexbert.model.registries import EMBEDDINGS

__all__ = ["ModernBertEmbeddings", "AbsolutePositionEmbeddings", "build_embeddings"]


@EMBEDDINGS.register("modernbert")
class ModernBertEmbeddings(nn.Module):
    """Token embeddings, then norm and dropout (HF ModernBertEmbeddings)."""

    init_roles: ClassVar[dict[str, str]] = {"tok_embeddings": "embedding"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = build_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids_T: torch.Tensor, position_ids_T: torch.Tensor) -> torch.Tensor:
        """Embed packed tokens.

        Args:
            input_ids_T: (T,) int64 token ids.
            position_ids_T: (T,) positions inside each document (unused here).
        Returns:
            (T, D) embeddings.
        """
        return self.drop(self.norm(self.tok_embeddings(input_ids_T)))


@EMBEDDINGS.register("absolute")
class AbsolutePositionEmbeddings(nn.Module):
    """Token plus learned absolute position embeddings, then norm and dropout (BERT baseline)."""

    init_roles: ClassVar[dict[str, str]] = {"tok_embeddings": "embedding", "position_embeddings": "embedding"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.max_positions = config.max_position_embeddings
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = build_norm(config)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids_T: torch.Tensor, position_ids_T: torch.Tensor) -> torch.Tensor:
        """Embed packed tokens with their positions.

        Args:
            input_ids_T: (T,) int64 token ids.
            position_ids_T: (T,) positions inside each document, < max_position_embeddings.
        Returns:
            (T, D) embeddings.
        """
        x_TD = self.tok_embeddings(input_ids_T) + self.position_embeddings(position_ids_T)
        return self.drop(self.norm(x_TD))

    def check_max_seqlen(self, max_seqlen: int) -> None:
        """Fail with what to change before an out-of-range lookup (a device assert on CUDA)."""
        if max_seqlen > self.max_positions:
            raise ValueError(f"a document of {max_seqlen} tokens is longer than model.max_position_embeddings "
                             f"{self.max_positions} of the absolute position embeddings; shorten the documents "
                             "or raise max_position_embeddings")


def build_embeddings(config: FlexBertConfig) -> nn.Module:
    """Return the configured embedding block."""
    return EMBEDDINGS.get(config.embedding, "model.embedding")(config)
