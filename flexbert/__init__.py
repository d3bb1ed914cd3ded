"""FlexBERT: pretrain modern BERT-style encoders (the ModernBERT recipe).

`import flexbert` is light: torch only (no Composer, transformers or flash-attn).
"""
from flexbert.config.model import FlexBertConfig, LayerSpec, load_model_config
from flexbert.model import (
    FlexBertForMaskedLM,
    FlexBertForSequenceClassification,
    FlexBertModel,
    build_model,
)

__version__ = "0.1.0"

__all__ = ["FlexBertConfig", "LayerSpec", "FlexBertModel", "FlexBertForMaskedLM", "FlexBertForSequenceClassification",
           "build_model", "load_model_config", "__version__"]
