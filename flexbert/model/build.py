"""build_model: config source -> FlexBertForMaskedLM; meta_model: the same on the meta device."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from flexbert.config.model import FlexBertConfig, load_model_config
from flexbert.model.masked_lm import FlexBertForMaskedLM
from flexbert.model.registries import check_block_names

__all__ = ["build_model", "meta_model"]


def build_model(source: FlexBertConfig | Mapping[str, Any] | str | Path) -> FlexBertForMaskedLM:
    """Build a freshly initialised masked LM from a config, a dict of model keys or a YAML path.

    Build under `with torch.device("meta"):` to count parameters without allocating them.
    A block name no registry holds is a ConfigError naming the key, the file (for a path) and
    the closest registered name.
    """
    config = load_model_config(source)
    check_block_names(config, str(source) if isinstance(source, (str, Path)) else None)
    return FlexBertForMaskedLM(config)


@functools.lru_cache(maxsize=16)
def _meta_model_of(config_json: str) -> FlexBertForMaskedLM:
    with torch.device("meta"):
        return FlexBertForMaskedLM(FlexBertConfig(**json.loads(config_json)))


def meta_model(config: FlexBertConfig) -> FlexBertForMaskedLM:
    """The model of `config` on the meta device (shapes, no memory, no init), cached per config.

    What a model's blocks declare (parameter counts, FLOPs, tiling axes) is read from it, so those
    facts come from the blocks that are built, not from formulas that know the block types. Treat it
    as read-only: it is shared between callers.
    """
    return _meta_model_of(json.dumps(config.to_dict(), sort_keys=True, default=str))
