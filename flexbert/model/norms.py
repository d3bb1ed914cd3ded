"""Normalisation layers by name (model.norm): LayerNorm or RMSNorm over the hidden dim."""
from __future__ import annotations

from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.registries import NORMS

__all__ = ["build_norm"]


@NORMS.register("layernorm")
def _layernorm(config: FlexBertConfig) -> nn.Module:
    # HF ModernBERT: nn.LayerNorm(d, eps=norm_eps, bias=norm_bias), i.e. no bias by default.
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


@NORMS.register("rmsnorm")
def _rmsnorm(config: FlexBertConfig) -> nn.Module:
    # No bias by construction; the config rejects norm_bias with rmsnorm.
    return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)


def build_norm(config: FlexBertConfig) -> nn.Module:
    """Return the configured norm over the last dim (hidden_size)."""
    return NORMS.get(config.norm, "model.norm")(config)
