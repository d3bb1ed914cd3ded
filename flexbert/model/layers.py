"""Encoder layers by layout (model.layer_layout): how attention, MLP and norms are wired.

Shape legend: T packed tokens, D hidden size.

- prenorm  (ModernBERT): x = x + attn(attn_norm(x)); x = x + mlp(mlp_norm(x)).
           Layer 0 has attn_norm = Identity: the embeddings end with a norm already (HF).
- postnorm (BERT):       x = attn_norm(x + attn(x)); x = mlp_norm(x + mlp(x)). No final norm.
- parallel:              x = x + attn(norm(x)) + mlp(norm(x)), one shared norm per layer.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig, LayerSpec
from flexbert.model.attention.kernels.base import AttentionKernel, PackedSeqInfo
from flexbert.model.attention.module import build_attention
from flexbert.model.mlp import build_mlp
from flexbert.model.norms import build_norm
from flexbert.model.registries import LAYOUTS

__all__ = ["PreNormLayer", "PostNormLayer", "ParallelLayer", "build_layer", "layout_has_final_norm"]


class _Layer(nn.Module):
    """Common constructor arguments and forward signature of every layout."""

    # Whether the encoder ends with final_norm: layouts whose output is already normalised say False.
    has_final_norm: ClassVar[bool] = True

    def __init__(self, config: FlexBertConfig, index: int, spec: LayerSpec):
        super().__init__()
        self.index = index
        self.spec = spec

    def forward(self, x_TD: torch.Tensor, seqs: PackedSeqInfo, position_ids_T: torch.Tensor,
                kernel: AttentionKernel) -> torch.Tensor:
        """Args: x_TD (T, D); seqs; position_ids_T (T,); kernel. Returns (T, D)."""
        raise NotImplementedError


@LAYOUTS.register("prenorm")
class PreNormLayer(_Layer):
    """Pre-norm residual layer (HF ModernBertEncoderLayer)."""

    def __init__(self, config: FlexBertConfig, index: int, spec: LayerSpec):
        super().__init__(config, index, spec)
        self.attn_norm = nn.Identity() if index == 0 else build_norm(config)
        self.attn = build_attention(config, spec)
        self.mlp_norm = build_norm(config)
        self.mlp = build_mlp(config)

    def forward(self, x_TD, seqs, position_ids_T, kernel):
        x_TD = x_TD + self.attn(self.attn_norm(x_TD), seqs, position_ids_T, kernel)
        return x_TD + self.mlp(self.mlp_norm(x_TD))


@LAYOUTS.register("postnorm")
class PostNormLayer(_Layer):
    """Post-norm residual layer (original BERT)."""

    has_final_norm = False

    def __init__(self, config: FlexBertConfig, index: int, spec: LayerSpec):
        super().__init__(config, index, spec)
        self.attn = build_attention(config, spec)
        self.attn_norm = build_norm(config)
        self.mlp = build_mlp(config)
        self.mlp_norm = build_norm(config)

    def forward(self, x_TD, seqs, position_ids_T, kernel):
        x_TD = self.attn_norm(x_TD + self.attn(x_TD, seqs, position_ids_T, kernel))
        return self.mlp_norm(x_TD + self.mlp(x_TD))


@LAYOUTS.register("parallel")
class ParallelLayer(_Layer):
    """Attention and MLP side by side on one normalised input (GPT-J / PaLM style)."""

    def __init__(self, config: FlexBertConfig, index: int, spec: LayerSpec):
        super().__init__(config, index, spec)
        self.norm = build_norm(config)
        self.attn = build_attention(config, spec)
        self.mlp = build_mlp(config)

    def forward(self, x_TD, seqs, position_ids_T, kernel):
        h_TD = self.norm(x_TD)
        return x_TD + self.attn(h_TD, seqs, position_ids_T, kernel) + self.mlp(h_TD)


def build_layer(config: FlexBertConfig, index: int, spec: LayerSpec) -> nn.Module:
    """Return layer `index` of the configured layout."""
    return LAYOUTS.get(config.layer_layout, "model.layer_layout")(config, index, spec)


def layout_has_final_norm(config: FlexBertConfig) -> bool:
    """Whether the encoder of this layout ends with model.final_norm."""
    return LAYOUTS.get(config.layer_layout, "model.layer_layout").has_final_norm
