"""The model to probe, from any of the places FlexBERT keeps one.

MODEL may be:

* a Composer checkpoint file written by train.py (`config.yaml` beside it),
* a save folder (`config.yaml` + checkpoints): its newest checkpoint, i.e. the file
  `latest-rank0.pt` points at, else the highest `ep<E>-ba<B>-rank0.pt`,
* a FlexBERT folder (`model.safetensors` + `config.yaml`, `flexbert.export.save_flexbert`),
* a Hugging Face ModernBERT folder (`config.json` + weights, `flexbert.export.load_hf`).

The last three kinds and all weight reading go through the project's loader
(`flexbert.export.pretrained.load_pretrained`): safetensors or
`torch.load(weights_only=True)` only, strict key and shape checks.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional
from flexbert.export.pretrained import CheckpointError, find_tokenizer, load_pretrained

__all__ = ["LoadedModel", "newest_checkpoint", "checkpoint_path", "load_model", "ModelLoadError"]

_CKPT = re.compile(r"^ep(\d+)-ba(\d+)-rank0\.pt$")


class ModelLoadError(ValueError):
    """MODEL is not something the probes can load; says what was expected."""


@dataclasses.dataclass
class LoadedModel:
    """A FlexBertForMaskedLM and where it came from.

    Attributes:
        model: the model (CPU, fp32, eval mode).
        kind: save_folder | composer | flexbert | hf.
        path: MODEL as given.
        checkpoint: the file or folder actually read.
        config_file: the config.yaml / config.json the model config came from.
        tokenizer_dir: the model's tokenizer folder if one was found (needed for text corpora only).
    """

    model: Any
    kind: str
    path: str
    checkpoint: str
    config_file: Optional[str]
    tokenizer_dir: Optional[str]


def _is_save_folder(p: Path) -> bool:
    has_weights = any((p / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json",
                                                   "pytorch_model.bin", "pytorch_model.bin.index.json"))
    return p.is_dir() and (p / "config.yaml").is_file() and not has_weights and any(p.glob("*.pt"))


def newest_checkpoint(folder: str | os.PathLike) -> Path:
    """The newest checkpoint of a save folder: `latest-rank0.pt`'s target, else the highest ep/ba.

    Raises:
        ModelLoadError: no checkpoint in the folder.
    """
    folder = Path(folder)
    latest = folder / "latest-rank0.pt"
    if latest.is_file():  # a symlink Composer updates at every save; is_file follows it
        return latest
    numbered = [(tuple(map(int, m.groups())), f) for f in folder.glob("*.pt") if (m := _CKPT.match(f.name))]
    if numbered:
        return max(numbered, key=lambda x: x[0])[1]
    others = sorted(folder.glob("*.pt"), key=lambda f: f.stat().st_mtime)
    if others:
        return others[-1]
    raise ModelLoadError(f"{folder}: no checkpoint (*.pt) in this save folder")


def checkpoint_path(path: str | os.PathLike) -> Path:
    """What `load_model(path)` reads, found without reading it: a save folder's newest checkpoint, else `path`."""
    p = Path(path)
    return newest_checkpoint(p) if _is_save_folder(p) else p


def load_model(path: str | os.PathLike, *, tokenizer: Optional[str] = None) -> LoadedModel:
    """Load MODEL (see the module docstring) as a FlexBertForMaskedLM on CPU in eval mode.

    Args:
        path: checkpoint file, save folder, FlexBERT folder or Hugging Face folder.
        tokenizer: the tokenizer folder, overriding the one found beside the model / in its config.
    Raises:
        ModelLoadError: nothing loadable there, or weights that do not fit the config (named).
    """
    p = Path(path)
    target = checkpoint_path(p)
    kind = "save_folder" if target != p else None
    try:
        pre = load_pretrained(target)
    except CheckpointError as e:
        raise ModelLoadError(f"{e}; MODEL is a checkpoint file, a save folder (config.yaml + *.pt), a FlexBERT "
                             "folder (model.safetensors + config.yaml) or a Hugging Face ModernBERT folder") from None
    try:
        tok = find_tokenizer(pre, tokenizer)
    except CheckpointError:
        tok = None  # only a text corpus needs it; that path says so
    return LoadedModel(model=pre.model.eval(), kind=kind or pre.kind, path=str(path), checkpoint=str(target),
                       config_file=pre.config_file, tokenizer_dir=tok)
