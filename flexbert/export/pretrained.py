"""Load a pretrained FlexBERT masked LM from any checkpoint kind: the loader every downstream use shares.

Three checkpoint kinds are recognised by what is on disk:

* ``composer``: a Composer checkpoint file (``*.pt``; ``state['state']['model']`` holds
  ``model.<FlexBertForMaskedLM name>``) with the run's ``config.yaml`` beside it;
* ``flexbert``: a folder with ``model.safetensors`` + ``config.yaml`` (`save_flexbert`);
* ``hf``: a Hugging Face ModernBERT folder (``config.json`` + weights), via `load_hf`.

Weights are read through flexbert.checkpoint_reader (data only, never code). Fine-tuning
(flexbert.finetune), retrieval and the long-context probes all load their encoder here, so
none of them imports another.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from flexbert.checkpoint_reader import CheckpointError, strip_prefixes  # the one error for unusable checkpoints
from flexbert.config.model import load_model_config
from flexbert.export.hf import load_hf, load_state_strict
from flexbert.export.io import read_composer_weights, read_weights
from flexbert.export.mapping import ExportError
from flexbert.model import FlexBertForMaskedLM

__all__ = ["CheckpointError", "Pretrained", "checkpoint_kind", "load_pretrained", "find_tokenizer"]


@dataclasses.dataclass
class Pretrained:
    """A loaded masked-LM model and where it came from."""

    model: torch.nn.Module  # FlexBertForMaskedLM
    kind: str  # composer | flexbert | hf
    path: str
    config_file: str | None  # config.yaml / config.json the config was read from


def checkpoint_kind(path: str | os.PathLike) -> str:
    """`composer`, `flexbert` or `hf` from what is on disk; CheckpointError otherwise."""
    p = Path(path)
    if p.is_file():
        if not (p.parent / "config.yaml").is_file():
            raise CheckpointError(f"{p}: a Composer checkpoint needs the run's config.yaml beside it "
                                  f"(no {p.parent / 'config.yaml'}); copy it there")
        return "composer"
    if p.is_dir():
        has_weights = any((p / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json",
                                                       "pytorch_model.bin", "pytorch_model.bin.index.json"))
        if (p / "config.yaml").is_file() and has_weights:
            return "flexbert"
        if (p / "config.json").is_file() and has_weights:
            return "hf"
        raise CheckpointError(f"{p}: not a model folder; expected model.safetensors with config.yaml (FlexBERT) "
                              "or with config.json (Hugging Face ModernBERT)")
    raise CheckpointError(f"{p}: no such file or folder")


def _load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """The exporter's strict load (names every missing / unexpected / mis-shaped tensor), as a CheckpointError."""
    try:
        load_state_strict(model, sd, source)
    except ExportError as e:
        raise CheckpointError(str(e)) from None


def load_pretrained(path: str | os.PathLike) -> Pretrained:
    """Load a FlexBertForMaskedLM from any of the three checkpoint kinds."""
    p = Path(path)
    kind = checkpoint_kind(p)
    try:
        if kind == "hf":
            return Pretrained(load_hf(p), kind, str(p), str(p / "config.json"))
        config_file = (p.parent if kind == "composer" else p) / "config.yaml"
        model = FlexBertForMaskedLM(load_model_config(config_file))
        raw = read_composer_weights(p) if kind == "composer" else read_weights(p)
        # Composer saves the wrapper's keys (`model.` + FlexBERT names); strip_prefixes decides by matching.
        _load_strict(model, strip_prefixes(raw, set(model.state_dict())), str(p))
    except ExportError as e:
        raise CheckpointError(str(e)) from None
    return Pretrained(model, kind, str(p), str(config_file))


def find_tokenizer(pre: Pretrained, explicit: str | None) -> str:
    """The tokenizer folder: `explicit`, else the checkpoint folder, else config.yaml's `tokenizer:`."""
    if explicit:
        return explicit
    folder = Path(pre.path) if pre.kind != "composer" else Path(pre.path).parent
    if (folder / "tokenizer.json").is_file():
        return str(folder)
    if pre.config_file and pre.config_file.endswith(".yaml"):
        from omegaconf import OmegaConf

        recorded = OmegaConf.load(pre.config_file).get("tokenizer")
        if recorded:
            # Recorded as given at training time: relative to that run's working directory,
            # which is usually the repository root; also try relative to the config file.
            for candidate in (Path(recorded), Path(pre.config_file).parent / recorded):
                if (candidate / "tokenizer.json").is_file():
                    return str(candidate)
            raise CheckpointError(f"{pre.config_file} names tokenizer '{recorded}', which is not found from here; "
                                  "pass --tokenizer DIR")
    raise CheckpointError(f"no tokenizer found for {pre.path} (no tokenizer.json in {folder}, no 'tokenizer:' "
                          "in its config); pass --tokenizer DIR")
