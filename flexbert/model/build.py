"""build_model: config source -> FlexBertForMaskedLM."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flexbert.config.model import FlexBertConfig, load_model_config
from flexbert.model.masked_lm import FlexBertForMaskedLM

__all__ = ["build_model"]


def build_model(source: FlexBertConfig | Mapping[str, Any] | str | Path) -> FlexBertForMaskedLM:
    """Build a freshly initialised masked LM from a config, a dict of model keys or a YAML path.

    Build under `with torch.device("meta"):` to count parameters without allocating them.
    """
    return FlexBertForMaskedLM(load_model_config(source))
