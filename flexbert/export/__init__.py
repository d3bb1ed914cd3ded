"""FlexBERT <-> Hugging Face ModernBERT folders (transformers is imported only inside this package).

Public API:
    save_hf(model, out_dir, tokenizer=None, overwrite=False, dtype=None)  FlexBERT -> HF folder
    load_hf(dir, mask_token_id=None) -> FlexBertForMaskedLM             HF folder -> FlexBERT
    config_to_hf(cfg) / config_from_hf(dict)                            config translation
    read_hf_config(dir, mask_token_id=None) -> FlexBertConfig            an HF folder's config.json
    hf_refusals(cfg)                                                    why a config cannot be exported
    save_flexbert(model, dir) / load_flexbert(dir, config=None)         FlexBERT folder format
CLI: python -m flexbert.export --help (see docs/export.md).
"""
from flexbert.export.hf import (
    TOKENIZER_FILES, hf_state_dict, load_flexbert, load_hf, read_hf_config, save_flexbert, save_hf,
)
from flexbert.export.mapping import ExportError, config_from_hf, config_to_hf, hf_refusals

__all__ = [
    "ExportError",
    "TOKENIZER_FILES",
    "config_from_hf",
    "config_to_hf",
    "hf_refusals",
    "hf_state_dict",
    "load_flexbert",
    "load_hf",
    "read_hf_config",
    "save_flexbert",
    "save_hf",
]
