"""build_model: config source -> FlexBertForMaskedLM."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flexbert.config.model import FlexBertConfig, load_model_config
from flexbert.model.masked_lm import FlexBertForMaskedLM
from flexbert.model.registries import check_block_names

__all__ = ["build_model"]


def build_model(source: FlexBertConfig | Mapping[str, Any] | str | Path) -> FlexBertForMaskedLM:
    """Build a freshly initialised masked LM from a config, a dict of model keys or a YAML path.

    Build under `with torch.device("meta"):` to count parameters without allocating them.
    A block name no registry holds is a ConfigError naming the key, the file (for a path) and
    the closest registered name.
    """
    config = load_model_config(source)
    check_block_names(config, str(source) if isinstance(source, (str, Path)) else None)
    return FlexBertForMaskedLM(config)
