"""The FlexBERT model library: blocks from registries -> FlexBertModel / FlexBertForMaskedLM.

Imports torch only (never Composer, transformers, flash_attn or triton at module level).
"""
from flexbert.model import activations, embeddings, heads, init, layers, mlp, norms  # noqa: F401  (register variants)
from flexbert.model.attention import KERNELS, AttentionKernel, PackedSeqInfo, resolve_kernel
from flexbert.model.build import build_model
from flexbert.model.classification import FlexBertForSequenceClassification, SequenceClassifierOutput
from flexbert.model.encoder import FlexBertModel
from flexbert.model.heads import FlexBertPredictionHead
from flexbert.model.masked_lm import FlexBertForMaskedLM, MaskedLMOutput
from flexbert.model.packing import PackedInputs, pack_inputs, repad

__all__ = ["FlexBertModel", "FlexBertForMaskedLM", "FlexBertForSequenceClassification", "FlexBertPredictionHead",
           "MaskedLMOutput", "SequenceClassifierOutput", "build_model", "KERNELS", "AttentionKernel",
           "PackedSeqInfo", "resolve_kernel", "PackedInputs", "pack_inputs", "repad"]
