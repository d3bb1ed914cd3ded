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
from flexbert.model.norms import is_norm
from flexbert.model.registries import INITS

__all__ = ["init_weights", "role_stds", "truncated_normal_"]


def truncated_normal_(tensor: torch.Tensor, std: float, cutoff: float) -> torch.Tensor:
    """Fill `tensor` in place from N(0, std^2) truncated to [-cutoff * std, cutoff * std].

    Inverse-CDF sampling from one uniform draw per element. torch's own trunc_normal_
    switched to rejection sampling in 2.13, which draws other numbers from the same seed;
    doing it here keeps a seed's initial weights the same on every torch version (recorded
    results such as bench/results/retrieval_pretraining.md depend on that).
    """
    half_mass = math.erf(cutoff / math.sqrt(2.0))  # P(|z| <= cutoff) for z ~ N(0, 1)
    tensor.uniform_(-half_mass, half_mass)
    tensor.erfinv_()
    tensor.mul_(std * math.sqrt(2.0))
    return tensor.clamp_(min=-cutoff * std, max=cutoff * std)


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
    """A norm initialises itself (`reset_parameters`: weight 1, bias 0 for torch's norms)."""
    if is_norm(module):
        module.reset_parameters()
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
                truncated_normal_(child.weight, std, cutoff)
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
    """Initialise every weight of `model` (in place) with the scheme named by config.init.

    A model built on the meta device (to count parameters and FLOPs) has no values to set: skipped.
    """
    scheme = INITS.get(config.init, "model.init")
    if any(p.is_meta for p in model.parameters()):
        return
    scheme(model, config)
