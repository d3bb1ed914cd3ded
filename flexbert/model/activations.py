"""Activation functions by name (model.hidden_activation, model.classifier_activation).

Names follow HF's ACT2FN: "gelu" is the exact erf GELU, "gelu_tanh" the tanh approximation.
"""
from __future__ import annotations

from torch import nn

from flexbert.model.registries import ACTIVATIONS

__all__ = ["build_activation"]

ACTIVATIONS.register("gelu")(lambda: nn.GELU())
ACTIVATIONS.register("gelu_tanh")(lambda: nn.GELU(approximate="tanh"))
ACTIVATIONS.register("silu")(lambda: nn.SiLU())
ACTIVATIONS.register("relu")(lambda: nn.ReLU())


def build_activation(name: str, where: str = "model.hidden_activation") -> nn.Module:
    """Return a fresh activation module for `name`."""
    return ACTIVATIONS.get(name, where)()
