"""File plumbing shared by the exporters: safe weight reading (output folders: flexbert.outputs).

Nothing here knows about model architectures. Weights are only ever read through
flexbert.checkpoint_reader: a checkpoint is data, never code to run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from flexbert.checkpoint_reader import CheckpointError, model_state_dict, read_checkpoint, read_weights_file
from flexbert.export.mapping import ExportError

__all__ = ["read_weights", "read_composer_weights"]


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights of an HF-style folder: model.safetensors, pytorch_model.bin, or their sharded index."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return _weights_file(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(_weights_file(folder / shard))
            return sd
    raise ExportError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin (or a sharded index)")


def _weights_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        return read_weights_file(path)
    except CheckpointError as e:
        raise ExportError(str(e)) from None


def read_composer_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict inside a Composer checkpoint file (`state['state']['model']`).

    Read by flexbert.checkpoint_reader (data only, never code). A plain state-dict `.pt` file is
    accepted too.
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; pass the checkpoint file (e.g. ep1-ba100-rank0.pt), "
                          "or a folder holding model.safetensors + config.yaml")
    try:
        return model_state_dict(read_checkpoint(path), path)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
