"""Continued pretraining from a Hugging Face ModernBERT folder (`init_from: {hf: DIR}`).

The model config comes from the folder's config.json (`flexbert.export.read_hf_config`, the one
reader of an HF folder's config, shared with `load_hf`): sizes,
both RoPE thetas, the local window, the global-layer period, norms, biases and token ids are
HF's. The run's `model:` section may still set keys that do not change the shape of any weight
(dropouts, `attn_backend`, `max_position_embeddings`, thetas for a context extension,
`sparse_prediction`, `gradient_checkpointing`, ...). Keys that would not fit the weights
(`SHAPE_KEYS`) are refused unless they equal the HF value; `preset` is refused (the folder is
the preset). `vocab_size` may only grow.

Vocabulary growth (an extended tokenizer, see data_prep/extend_tokenizer.py): when the run's
`tokenizer` has more ids than HF's `vocab_size`, the model's vocab becomes the tokenizer size
rounded up to a multiple of 64 (or `model.vocab_size` when set, >= that). At init the token
embedding table (and an untied decoder) gets the new rows set to the *mean of all existing
rows*, and `decoder.bias` gets the mean of the existing biases; existing rows are untouched,
so the logits of the old tokens are unchanged at step 0 (the softmax over the larger
vocabulary of course also sees the new tokens).

Imports neither Composer nor transformers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from flexbert.config.model import FlexBertConfig
from flexbert.config.strict import unknown_key
from flexbert.data.tokenizer import load_tokenizer, round_up
from flexbert.errors import ConfigError
from flexbert.export.hf import read_hf_config
from flexbert.export.io import read_weights

__all__ = ["SHAPE_KEYS", "hf_model_config", "hf_weights", "resize_vocab"]

#: Model keys whose value is fixed by the HF weights (their shapes or the parameter set).
SHAPE_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "embedding", "norm", "mlp", "attention", "layer_layout",
    "norm_bias", "attention_bias", "mlp_bias", "classifier_bias", "decoder_bias", "tie_word_embeddings",
)

_EMBED = "model.embeddings.tok_embeddings.weight"


def hf_model_config(folder: str, overrides: Mapping[str, Any], tokenizer: Optional[str] = None) -> FlexBertConfig:
    """The FlexBertConfig of a continued-pretraining run: HF config.json <- safe run overrides."""
    if not (Path(folder) / "config.json").is_file():
        raise ConfigError(f"init_from.hf {folder} has no config.json; point it at a Hugging Face ModernBERT folder "
                          "(e.g. a downloaded answerdotai/ModernBERT-base)")
    overrides = dict(overrides or {})
    if "preset" in overrides:
        raise ConfigError("model.preset cannot be used with init_from.hf: the model config comes from "
                          f"{folder}/config.json; remove model.preset")
    tok_info = None
    # the run's tokenizer (checked by the trainer's preflight when missing), else the folder's own
    if tokenizer and Path(tokenizer).exists():
        tok_dir = tokenizer
    else:
        tok_dir = folder if (Path(folder) / "tokenizer.json").is_file() else None
    if tok_dir:
        tok_info = load_tokenizer(tok_dir)
    mask = overrides.get("mask_token_id", tok_info.mask_id if tok_info is not None else None)
    base = read_hf_config(folder, mask_token_id=mask)
    known = {f.name for f in dataclasses.fields(FlexBertConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise unknown_key(f"model.{key}", known, f"the model section (continuing from {folder})")
        if key in SHAPE_KEYS and value != getattr(base, key):
            raise ConfigError(
                f"model.{key} is {value!r} but the weights in {folder} have {key} {getattr(base, key)!r}; "
                f"{key} cannot change when continuing from a Hugging Face folder (remove model.{key})")
    vocab = base.vocab_size
    if tok_info is not None and tok_info.vocab_size > vocab:
        vocab = round_up(tok_info.vocab_size, 64)  # an extended tokenizer: grow the tables
    if "vocab_size" in overrides:
        if overrides["vocab_size"] < vocab:
            raise ConfigError(f"model.vocab_size {overrides['vocab_size']} is smaller than {vocab} (the HF vocab_size "
                              f"{base.vocab_size} or the tokenizer's ids); the vocabulary can only grow")
        vocab = int(overrides["vocab_size"])
    merged = {**dataclasses.asdict(base), **overrides, "vocab_size": vocab}
    try:
        return FlexBertConfig(**merged)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model config from {folder} with this run's overrides is invalid: {e}") from None


def resize_vocab(weights: dict[str, torch.Tensor], vocab_size: int, tied: bool) -> dict[str, torch.Tensor]:
    """Grow the vocabulary tables of `weights` to `vocab_size` rows; new rows = mean of the old ones."""
    out = dict(weights)
    names = [_EMBED] + ([] if tied else ["decoder.weight"]) + ["decoder.bias"]
    for name in names:
        if name not in out:
            continue
        t = out[name]
        old = t.shape[0]
        if old > vocab_size:
            raise ValueError(f"{name} has {old} rows, more than the model's vocab_size {vocab_size}")
        if old == vocab_size:
            continue
        mean = t.float().mean(dim=0, keepdim=True).to(t.dtype)
        out[name] = torch.cat([t, mean.expand(vocab_size - old, *t.shape[1:])], dim=0).contiguous()
    return out


def hf_weights(folder: str, model_cfg: FlexBertConfig) -> dict[str, torch.Tensor]:
    """The HF folder's weights with FlexBERT names, tied decoder dropped, vocabulary grown to the model's."""
    sd = dict(read_weights(folder))
    tied = bool(model_cfg.tie_word_embeddings)
    if tied:
        sd.pop("decoder.weight", None)  # HF re-ties it; FlexBERT's tied parameter is the embedding
    return resize_vocab(sd, model_cfg.vocab_size, tied)
