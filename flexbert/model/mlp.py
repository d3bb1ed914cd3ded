"""Feed-forward blocks by name (model.mlp).

Shape legend: T packed tokens, D hidden size, I intermediate_size.

- glu: one fused Wi (D -> 2I); input, gate = Wi(x).chunk(2); Wo(drop(act(input) * gate)).
       With gelu this is GeGLU (ModernBERT), with silu SwiGLU. HF ModernBertMLP.
- mlp: Wo(drop(act(Wi(x)))), Wi: D -> I (BERT).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.activations import build_activation
from flexbert.model.registries import MLPS

__all__ = ["GLU", "MLP", "build_mlp"]


@MLPS.register("glu")
class GLU(nn.Module):
    """Gated linear unit feed-forward with a fused input projection."""

    init_roles: ClassVar[dict[str, str]] = {"Wi": "in", "Wo": "out"}
    # Wi's rows are [input half; gate half]: tiling grows each half on its own.
    tile_axes: ClassVar[dict[str, tuple[str | int, ...]]] = {"Wi.weight": (2, "intermediate", "hidden"),
                                                             "Wi.bias": (2, "intermediate")}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act = build_activation(config.hidden_activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x_TD: torch.Tensor) -> torch.Tensor:
        """Args: x_TD (T, D) (any leading dims). Returns (T, D)."""
        input_TI, gate_TI = self.Wi(x_TD).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(input_TI) * gate_TI))


@MLPS.register("mlp")
class MLP(nn.Module):
    """Plain two-layer feed-forward."""

    init_roles: ClassVar[dict[str, str]] = {"Wi": "in", "Wo": "out"}

    def __init__(self, config: FlexBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.act = build_activation(config.hidden_activation)
        self.drop = nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x_TD: torch.Tensor) -> torch.Tensor:
        """Args: x_TD (T, D) (any leading dims). Returns (T, D)."""
        return self.Wo(self.drop(self.act(self.Wi(x_TD))))


def build_mlp(config: FlexBertConfig) -> nn.Module:
    """Return the configured feed-forward block."""
    return MLPS.get(config.mlp, "model.mlp")(config)
