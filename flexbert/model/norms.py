"""Normalisation layers by name (model.norm): LayerNorm or RMSNorm over the hidden dim.

A norm is known as a norm by how it was built, not by its class: `build_norm` tags every module the
NORMS registry makes, and `is_norm` reads the tag (the optimizer exempts norms from weight decay,
init resets them with the module's own `reset_parameters`). So a new norm is one registered
factory here; its module's `reset_parameters` is its init rule.
"""
from __future__ import annotations

from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.registries import NORMS

__all__ = ["build_norm", "is_norm", "TORCH_NORM_TYPES"]

_NORM_TAG = "_flexbert_norm"
#: torch's own norm layers, recognised also in models FlexBERT did not build (e.g. an HF encoder).
TORCH_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm,
                                      nn.RMSNorm)


@NORMS.register("layernorm")
def _layernorm(config: FlexBertConfig) -> nn.Module:
    # HF ModernBERT: nn.LayerNorm(d, eps=norm_eps, bias=norm_bias), i.e. no bias by default.
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


@NORMS.register("rmsnorm")
def _rmsnorm(config: FlexBertConfig) -> nn.Module:
    # No bias by construction; the config rejects norm_bias with rmsnorm.
    return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)


def build_norm(config: FlexBertConfig) -> nn.Module:
    """Return the configured norm over the last dim (hidden_size), tagged as a norm."""
    module = NORMS.get(config.norm, "model.norm")(config)
    setattr(module, _NORM_TAG, True)
    return module


def is_norm(module: nn.Module) -> bool:
    """True for a module built by the norm registry, or one of torch's norm layers."""
    return bool(getattr(module, _NORM_TAG, False)) or isinstance(module, TORCH_NORM_TYPES)
