"""FlexBERT: pretrain modern BERT-style encoders (the ModernBERT recipe).

The public names below load on first use (PEP 562), so `import flexbert.data` in a data-prep
worker does not pay for torch; `from flexbert import FlexBertForMaskedLM` imports torch only
(no Composer, transformers or flash-attn).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "FlexBertConfig": "flexbert.config.model",
    "LayerSpec": "flexbert.config.model",
    "load_model_config": "flexbert.config.model",
    "FlexBertModel": "flexbert.model",
    "FlexBertForMaskedLM": "flexbert.model",
    "FlexBertForSequenceClassification": "flexbert.model",
    "build_model": "flexbert.model",
}

__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs
    from flexbert.config.model import FlexBertConfig, LayerSpec, load_model_config
    from flexbert.model import FlexBertForMaskedLM, FlexBertForSequenceClassification, FlexBertModel, build_model


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # cache: later lookups skip this function
        return value
    raise AttributeError(f"module 'flexbert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
