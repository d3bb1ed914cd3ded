"""The variant registries of the model: what each swappable block computes.

Each variant lives in the file of its family and registers itself with a decorator,
so adding a variant touches that one file:

| registry      | config key                                  | file            |
|---------------|---------------------------------------------|-----------------|
| EMBEDDINGS    | model.embedding                             | embeddings.py   |
| NORMS         | model.norm                                  | norms.py        |
| MLPS          | model.mlp                                   | mlp.py          |
| ACTIVATIONS   | model.hidden_activation, classifier_activation | activations.py |
| ATTENTIONS    | model.attention                             | attention/module.py |
| LAYOUTS       | model.layer_layout                          | layers.py       |
| POOLINGS      | model.classifier_pooling                    | heads.py        |
| INITS         | model.init                                  | init.py         |

Attention kernels (how attention runs) have their own registry,
`flexbert.model.attention.kernels.KERNELS` (model.attn_backend).
"""
from __future__ import annotations

from typing import Any, Callable

from flexbert.registry import Registry

__all__ = ["EMBEDDINGS", "NORMS", "MLPS", "ACTIVATIONS", "ATTENTIONS", "LAYOUTS", "POOLINGS", "INITS",
           "CONFIG_REGISTRIES"]

EMBEDDINGS: Registry[Any] = Registry("embedding")
NORMS: Registry[Callable[..., Any]] = Registry("norm")
MLPS: Registry[Any] = Registry("mlp")
ACTIVATIONS: Registry[Callable[[], Any]] = Registry("activation")
ATTENTIONS: Registry[Any] = Registry("attention variant")
LAYOUTS: Registry[Any] = Registry("layer layout")
POOLINGS: Registry[Callable[..., Any]] = Registry("classifier pooling")
INITS: Registry[Callable[..., None]] = Registry("init scheme")

# Config key -> registry its value is looked up in (checked in FlexBertConfig.__post_init__).
CONFIG_REGISTRIES: dict[str, Registry[Any]] = {
    "embedding": EMBEDDINGS,
    "norm": NORMS,
    "mlp": MLPS,
    "hidden_activation": ACTIVATIONS,
    "classifier_activation": ACTIVATIONS,
    "attention": ATTENTIONS,
    "layer_layout": LAYOUTS,
    "classifier_pooling": POOLINGS,
    "init": INITS,
}
