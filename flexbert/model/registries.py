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
| KERNELS       | model.attn_backend (or `auto`)              | attention/kernels/*.py |

Registration points one way: each variant's module imports its registry from here, and this
module imports no variant. The package `flexbert.model` imports every variant module (and the
attention kernels) when it is first imported, so any code holding a name from `flexbert.model`
sees every registered variant; `check_block_names` relies on that.
"""
from __future__ import annotations

from typing import Any, Callable

from flexbert.config.model import FlexBertConfig
from flexbert.registry import Registry

__all__ = ["EMBEDDINGS", "NORMS", "MLPS", "ACTIVATIONS", "ATTENTIONS", "LAYOUTS", "POOLINGS", "INITS", "KERNELS",
           "MLM_LOSSES", "CONFIG_REGISTRIES", "check_block_names"]

EMBEDDINGS: Registry[Any] = Registry("embedding")
NORMS: Registry[Callable[..., Any]] = Registry("norm")
MLPS: Registry[Any] = Registry("mlp")
ACTIVATIONS: Registry[Callable[[], Any]] = Registry("activation")
ATTENTIONS: Registry[Any] = Registry("attention variant")
LAYOUTS: Registry[Any] = Registry("layer layout")
POOLINGS: Registry[Callable[..., Any]] = Registry("classifier pooling")
INITS: Registry[Callable[..., None]] = Registry("init scheme")
# Attention kernels: how attention runs (a subclass of attention.kernels.base.AttentionKernel each).
KERNELS: Registry[Any] = Registry("attention kernel")
# MLM loss kernels: how decoder + cross-entropy run (model.mlm_loss; flexbert/model/mlm_loss.py).
MLM_LOSSES: Registry[Any] = Registry("MLM loss kernel")

# Config key -> registry its value is looked up in (checked by check_block_names).
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


def check_block_names(config: FlexBertConfig, source: str | None = None) -> None:
    """Every block name of `config` is registered (`attn_backend` may also be `auto`).

    Called where a model is built (FlexBertModel, build_model) and by the trainer's run loading
    and preflight, so a misspelt name fails before any data is read.

    Args:
        config: the model config.
        source: the file the config came from, named in the error when known.
    Raises:
        ConfigError: ``unknown norm 'layrnorm' at model.norm in run.yaml; choices: ...; did you mean 'layernorm'?``
    """
    def where(key: str) -> str:
        return f"model.{key} in {source}" if source else f"model.{key}"

    for key, registry in CONFIG_REGISTRIES.items():
        registry.get(getattr(config, key), where=where(key))
    if config.attn_backend != "auto":
        KERNELS.get(config.attn_backend, where=where("attn_backend"))
    if config.mlm_loss != "auto":
        MLM_LOSSES.get(config.mlm_loss, where=where("mlm_loss"))
