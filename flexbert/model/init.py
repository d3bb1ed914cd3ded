"""Weight initialisation schemes by name (model.init).

Blocks declare the role of their weights in a class attribute
`init_roles = {"child_name": role}`; roles are "embedding", "in" (input projections
Wqkv, Wi), "out" (output projections Wo, the head's dense, an untied decoder) and
"final_out" (classifier). A scheme maps roles to a std.

- modernbert: as HF ModernBertPreTrainedModel._init_weights: truncated normal at
  +-initializer_cutoff_factor * std with std embedding = in = initializer_range,
  out = initializer_range / sqrt(2 * num_hidden_layers), final_out = hidden_size ** -0.5;
  biases 0; norm weights 1.
- normal: every Linear / Embedding weight N(0, initializer_range); biases 0; norm weights 1.

Modules are visited children first (as HF's smart_apply), and a tensor is initialised
once: a decoder tied to the token embeddings keeps the embedding init (as HF, whose
tie_weights runs after init).
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from flexbert.config.model import FlexBertConfig
from flexbert.model.registries import INITS

__all__ = ["init_weights", "role_stds"]


def role_stds(config: FlexBertConfig) -> dict[str, float]:
    """The std of each weight role under the modernbert scheme."""
    return {
        "embedding": config.initializer_range,
        "in": config.initializer_range,
        "out": config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers),
        "final_out": config.hidden_size ** -0.5,
    }


def _post_order(module: nn.Module) -> Iterator[nn.Module]:
    for child in module.children():
        yield from _post_order(child)
    yield module


def _reset_norm(module: nn.Module) -> bool:
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
        return True
    return False


@INITS.register("modernbert")
@torch.no_grad()
def _modernbert_init(model: nn.Module, config: FlexBertConfig) -> None:
    stds = role_stds(config)
    cutoff = config.initializer_cutoff_factor
    done: set[int] = set()
    for module in _post_order(model):
        if _reset_norm(module):
            continue
        for child_name, role in getattr(module, "init_roles", {}).items():
            child = getattr(module, child_name, None)
            if child is None:
                continue
            std = stds[role]
            if id(child.weight) not in done:
                nn.init.trunc_normal_(child.weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)
                done.add(id(child.weight))
            if getattr(child, "bias", None) is not None:
                nn.init.zeros_(child.bias)


@INITS.register("normal")
@torch.no_grad()
def _normal_init(model: nn.Module, config: FlexBertConfig) -> None:
    done: set[int] = set()
    for module in _post_order(model):
        if _reset_norm(module):
            continue
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if id(module.weight) not in done:
                nn.init.normal_(module.weight, mean=0.0, std=config.initializer_range)
                done.add(id(module.weight))
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def init_weights(model: nn.Module, config: FlexBertConfig) -> None:
    """Initialise every weight of `model` (in place) with the scheme named by config.init."""
    INITS.get(config.init, "model.init")(model, config)
