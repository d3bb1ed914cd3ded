"""File plumbing shared by the exporters: atomic folders, safe weight reading, prefix fixing.

Nothing here knows about model architectures. Weights are only ever read with safetensors or
`torch.load(weights_only=True)`: a checkpoint is data, never code to run.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch

from flexbert.export.mapping import ExportError

__all__ = ["atomic_dir", "check_out_dir", "read_weights", "read_composer_weights", "fix_prefixes"]


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a non-empty `out_dir` unless `overwrite`; called before any work is done."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
    return out


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success it becomes `out_dir`.

    A crash (or any exception) inside the block deletes the temporary folder, so a folder
    named `out_dir` only ever holds a complete export. The final step is a rename on the same
    file system; an existing `out_dir` (allowed only with `overwrite`) is moved aside first and
    deleted once the new one is in place.
    """
    out = check_out_dir(out_dir, overwrite).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{tag}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _load_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with non-tensor globals: refuse rather than execute it
        raise ExportError(f"{path} cannot be read with torch.load(weights_only=True): {e}. "
                          f"Re-save it as model.safetensors in a trusted environment.") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExportError(f"{path} does not hold a flat state dict of tensors")
    return obj


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights of an HF-style folder: model.safetensors, pytorch_model.bin, or their sharded index."""
    folder = Path(folder)
    for name, loader in (("model.safetensors", _load_safetensors), ("pytorch_model.bin", _load_torch_weights)):
        if (folder / name).is_file():
            return loader(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(loader(folder / shard))
            return sd
    raise ExportError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin (or a sharded index)")


def _numpy_safe_globals() -> list[Any]:
    """The numpy objects inside Composer's RNG state (np.random.get_state()): arrays and dtypes.

    These only rebuild plain arrays; they cannot run code. numpy 2 renamed numpy.core to
    numpy._core, and a pickle names whichever wrote it, so both spellings are listed.
    """
    import importlib

    import numpy as np

    found: list[Any] = [np.ndarray, np.dtype]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        # scalar rebuilds numpy scalars (np.int64 counters some callbacks keep)
        found += [getattr(m, "_reconstruct"), getattr(m, "scalar")]
    # Unpickling a dtype names its class (np.random.get_state() holds a uint32 array ->
    # numpy.dtypes.UInt32DType). Dtype classes only describe memory layouts, so all are allowed.
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return found


# Everything a Composer checkpoint written by FlexBERT's training needs besides tensors and
# builtins: numpy RNG state, the timestamp's wall-clock durations, and the torch version
# string Composer records (TorchVersion is a str subclass).
def composer_safe_globals() -> list[Any]:
    from torch.torch_version import TorchVersion

    return _numpy_safe_globals() + [datetime.timedelta, TorchVersion]


def _why(e: Exception) -> str:
    """The informative line of torch's weights_only error (the one naming the refused global)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if "got <" in ln or "Unsupported global" in ln]
    return (named or lines or [""])[0].strip()


def read_composer_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict inside a Composer checkpoint file (`state['state']['model']`).

    Loaded with `weights_only=True` and an allow-list of the numpy / datetime types Composer
    stores (RNG state, timestamps). A plain state-dict `.pt` file is accepted too.
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; pass the checkpoint file (e.g. ep1-ba100-rank0.pt), "
                          "or a folder holding model.safetensors + config.yaml")
    try:
        with torch.serialization.safe_globals(composer_safe_globals()):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        unsafe = []
        with contextlib.suppress(Exception):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        listed = f" It stores these non-tensor objects: {', '.join(unsafe)}." if unsafe else ""
        raise ExportError(
            f"cannot read {path} safely (torch.load weights_only=True): {type(e).__name__}: "
            f"{_why(e)}.{listed} Sharded (distributed) checkpoints and "
            "checkpoints with custom objects are not supported: if you trust the file, extract "
            "state['state']['model'] in a trusted environment, save it with safetensors as "
            "model.safetensors beside a config.yaml, and export that folder.") from None
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and "model" in obj["state"]:
        sd = obj["state"]["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise ExportError(f"{path} is neither a Composer checkpoint (no state['state']['model']) nor a state dict")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def fix_prefixes(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Rename keys of a saved state dict to the FlexBertForMaskedLM names in `expected`.

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
