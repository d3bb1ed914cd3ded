"""The one way FlexBERT reads a checkpoint or weights file: as data, never as code.

Every path that opens a checkpoint goes through `read_checkpoint`: `init_from.path`, `load_path`
and autoresume (before Composer's own loader sees the file), export, fine-tuning and retrieval.
A file is read with safetensors, or with `torch.load(weights_only=True)` and a narrow allow-list
of the non-tensor types that FlexBERT's own training writes into Composer checkpoints (numpy RNG
state, timestamps' durations, the torch version string). Anything else in a pickle (a class, a
function such as `os.system`) is refused before a single object is built, and the error names the
file and the refused globals. A truncated or corrupt file is refused naming the file.

This module imports only torch, numpy and safetensors: it sits below config, model, train and
export, all of which use it.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError", "allowed_globals", "read_checkpoint", "read_weights_file", "model_state_dict",
    "strip_prefixes",
]


class CheckpointError(ValueError):
    """A checkpoint or weights file cannot be read safely or completely; the message names the file."""


def _numpy_globals() -> list[Any]:
    """The numpy objects inside Composer's RNG state (np.random.get_state()): arrays and dtypes.

    They only rebuild plain arrays and scalars; they cannot run code. numpy 2 renamed numpy.core
    to numpy._core, and a pickle names whichever wrote it, so both spellings are listed.
    """
    import numpy as np

    found: list[Any] = [np.ndarray, np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        found += [getattr(m, "_reconstruct"), getattr(m, "scalar")]
    # A pickled dtype names its class (np.random.get_state() holds a uint32 array ->
    # numpy.dtypes.UInt32DType); dtype classes only describe memory layouts.
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return found


def allowed_globals() -> list[Any]:
    """Every non-builtin type a checkpoint written by FlexBERT's training may hold besides tensors."""
    from torch.torch_version import TorchVersion

    return _numpy_globals() + [datetime.timedelta, TorchVersion]


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refused_globals(path: Path, error: Exception) -> list[str]:
    """The globals of `path` outside the allow-list, as torch names them (without unpickling)."""
    names: list[str] = []
    with contextlib.suppress(Exception):
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in allowed_globals()}
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if n not in allowed]
    return names or _GLOBAL.findall(str(error))


def _first_line(error: Exception) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


def read_checkpoint(path: str | os.PathLike, *, role: str = "checkpoint") -> Any:
    """Read a whole checkpoint file (Composer `.pt`, a state dict `.pt`/`.bin`, or `.safetensors`).

    Args:
        path: the file.
        role: what the file is to the caller (e.g. "load_path", "init_from.path"), for messages.
    Returns:
        The loaded object (tensors on CPU).
    Raises:
        CheckpointError: the file is missing, a folder, truncated or corrupt, or holds objects
            that are not data (the message names them).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{role} {path} is a folder; point it at a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{role} {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(f"cannot read {role} {path}: {_first_line(e)} (truncated or not safetensors)") from None
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        message = str(e)
        if "GLOBAL" in message or "Unsupported global" in message:  # torch's weights_only refusal
            refused = ", ".join(_refused_globals(path, e)) or "unknown"
            raise CheckpointError(
                f"refusing {role} {path}: it holds Python objects that are not data ({refused}); FlexBERT reads "
                f"checkpoints as data only (tensors, numbers, strings and the RNG state its training writes), "
                f"never as code. Use a checkpoint written by FlexBERT, or a safetensors file."
            ) from None
        raise CheckpointError(f"cannot read {role} {path}: {_first_line(e)} (the file is truncated or corrupt)") from None


def read_weights_file(path: str | os.PathLike, *, role: str = "weights") -> dict[str, torch.Tensor]:
    """A flat {name: tensor} file (`model.safetensors`, `pytorch_model.bin`, a state-dict `.pt`)."""
    obj = read_checkpoint(path, role=role)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{role} {path} does not hold a flat state dict of tensors")
    return obj


def model_state_dict(obj: Any, path: str | os.PathLike, *, role: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model tensors of a loaded checkpoint: Composer's `state['state']['model']`, or a flat state dict."""
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and "model" in obj["state"]:
        sd = obj["state"]["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(f"{role} {path} is neither a Composer checkpoint (no state['state']['model']) "
                              "nor a state dict; was it written by train.py?")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def strip_prefixes(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Rename saved keys to the FlexBERT model's names in `expected`: the one prefix rule.

    Removes `_orig_mod.` (torch.compile) anywhere and a leading `module.` (DDP), then the
    Composer wrapper's leading `model.` when that makes more keys match: FlexBERT's own keys
    also start with `model.` (HF names), so the choice is made by matching, not by string rules.
    """
    clean = {}
    for k, v in sd.items():
        k = k.replace("_orig_mod.", "")
        if k.startswith("module."):
            k = k[len("module."):]
        clean[k] = v
    stripped = {k[len("model."):]: v for k, v in clean.items() if k.startswith("model.")}
    if len(stripped) == len(clean) and len(set(stripped) & expected) > len(set(clean) & expected):
        return stripped
    return clean
