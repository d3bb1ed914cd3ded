"""Export FlexBertForMaskedLM to a Hugging Face ModernBERT folder, and import one back.

FlexBERT uses HF ModernBertForMaskedLM's parameter names, so the weights are copied without
renaming. What this module adds is the checking: the config must be representable
(`mapping.hf_refusals`), the key sets and shapes must equal those of an HF model built from
the exported config, the tied decoder is stored the way HF stores it (omitted; HF re-ties it
on load), and the tokenizer must agree with the config's special ids.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from flexbert.checkpoint_reader import strip_prefixes
from flexbert.config.model import FlexBertConfig, load_model_config
from flexbert.export.io import read_weights
from flexbert.export.mapping import ExportError, config_from_hf, config_to_hf
from flexbert.model import FlexBertForMaskedLM
from flexbert.outputs import atomic_output_dir, atomic_write_json, check_output_dir

__all__ = ["save_hf", "load_hf", "read_hf_config", "hf_state_dict", "save_flexbert", "load_flexbert", "load_state_strict", "TOKENIZER_FILES"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_TIED = "decoder.weight"
_EMBED = "model.embeddings.tok_embeddings.weight"


def _hf_expected_shapes(hf_cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of HF ModernBertForMaskedLM for `hf_cfg`, as HF saves them.

    Built on the meta device (no memory, no init cost): asking HF itself means a change in a
    future transformers release shows up as a clear key mismatch, not as wrong outputs.
    """
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(**hf_cfg)
    with torch.device("meta"):
        model = ModernBertForMaskedLM(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if hf_cfg["tie_word_embeddings"]:
        shapes.pop(_TIED, None)  # HF's save_pretrained drops the tied copy
    return shapes


def _tied_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with the tied decoder weight removed (it is the embedding)."""
    sd = dict(model.state_dict())
    if model.config.tie_word_embeddings and _TIED in sd:
        if not (sd[_TIED].data_ptr() == sd[_EMBED].data_ptr() or torch.equal(sd[_TIED], sd[_EMBED])):
            raise ExportError("model.tie_word_embeddings is true but decoder.weight differs from the token "
                              "embeddings; the model was modified after building (re-tie it or set "
                              "tie_word_embeddings: false)")
        del sd[_TIED]
    return sd


def hf_state_dict(model: torch.nn.Module, dtype: torch.dtype | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (config.json dict, tensors to save) for `model`, after every check HF needs.

    Raises:
        ExportError: an option HF cannot represent, or parameters HF does not have (named).
    """
    import transformers

    dtype_name = str(dtype or next(model.parameters()).dtype).replace("torch.", "")
    hf_cfg = config_to_hf(model.config, transformers_version=transformers.__version__, dtype=dtype_name)
    expected = _hf_expected_shapes(hf_cfg)
    sd = _tied_state_dict(model)
    extra = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    wrong = sorted(f"{k}: ours {tuple(sd[k].shape)}, HF {expected[k]}"
                   for k in set(sd) & set(expected) if tuple(sd[k].shape) != expected[k])
    if extra or missing or wrong:
        lines = []
        if extra:
            lines.append(f"parameters HF ModernBERT does not have (FlexBERT-only options): {extra}")
        if missing:
            lines.append(f"parameters HF ModernBERT needs that the model lacks: {missing}")
        if wrong:
            lines.append(f"shape mismatches: {wrong}")
        raise ExportError("cannot export to Hugging Face ModernBERT:\n  - " + "\n  - ".join(lines))
    tensors = {k: v.detach().to(device="cpu", dtype=dtype or v.dtype).contiguous().clone() for k, v in sd.items()}
    return hf_cfg, tensors


def _check_tokenizer(tok: Any, cfg: Any) -> None:
    """The tokenizer's special ids must be the config's and its vocab must fit in vocab_size."""
    problems = []
    for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        tid = getattr(tok, name, None)
        if tid is not None and tid != getattr(cfg, name):
            problems.append(f"tokenizer {name} is {tid} but model.{name} is {getattr(cfg, name)}")
    if len(tok) > cfg.vocab_size:
        problems.append(f"tokenizer has {len(tok)} tokens but model.vocab_size is {cfg.vocab_size}")
    if problems:
        raise ExportError("tokenizer does not match the model config: " + "; ".join(problems)
                          + " (pass the tokenizer the model was trained with, or fix the model config)")


def _write_tokenizer(tokenizer: Any, cfg: Any, dest: Path) -> list[str]:
    """Copy (folder) or save (tokenizer object) the tokenizer files into `dest`; return their names."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tokenizer, (str, os.PathLike)):
        src = Path(tokenizer)
        if not (src / "tokenizer.json").is_file():
            raise ExportError(f"--tokenizer {src} has no tokenizer.json (save it with a fast tokenizer's save_pretrained)")
        _check_tokenizer(PreTrainedTokenizerFast.from_pretrained(str(src)), cfg)
        names = [n for n in TOKENIZER_FILES if (src / n).is_file()]
        for n in names:
            shutil.copyfile(src / n, dest / n)
    else:
        _check_tokenizer(tokenizer, cfg)
        before = set(os.listdir(dest))
        tokenizer.save_pretrained(str(dest))
        names = sorted(set(os.listdir(dest)) - before)
    _portable_tokenizer_class(dest / "tokenizer_config.json")
    return names


# transformers 5 saves fast tokenizers as class "TokenizersBackend", a name 4.x cannot resolve; both
# generations load "PreTrainedTokenizerFast" from the same tokenizer.json.
_PORTABLE_TOKENIZER_CLASS = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def _portable_tokenizer_class(path: Path) -> None:
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    portable = _PORTABLE_TOKENIZER_CLASS.get(config.get("tokenizer_class"))
    if portable is not None:
        config["tokenizer_class"] = portable
        atomic_write_json(path, config, ensure_ascii=False)


def save_hf(model: torch.nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None, *,
            overwrite: bool = False, dtype: torch.dtype | None = None) -> list[str]:
    """Write `model` (a FlexBertForMaskedLM) as an HF ModernBERT folder loadable by AutoModelForMaskedLM.

    Args:
        model: the FlexBERT masked-LM model.
        out_dir: output folder; written under a temporary name beside it, renamed when complete.
        tokenizer: optional folder with tokenizer.json (+ tokenizer_config.json,
            special_tokens_map.json), or a transformers fast tokenizer object.
        overwrite: replace a non-empty `out_dir`.
        dtype: cast weights (e.g. torch.bfloat16); default keeps the model's dtype.

    Returns:
        The names of the files written.

    Raises:
        ExportError: the config or weights cannot be represented (option and value named), or
            the tokenizer disagrees with the config.
        OutputError: `out_dir` is not empty (without `overwrite`), is a file, is or holds the
            tokenizer folder, or cannot be created (flexbert.outputs).
    """
    from safetensors.torch import save_file

    inputs = [("tokenizer", tokenizer)] if isinstance(tokenizer, (str, os.PathLike)) else []
    check_output_dir(out_dir, inputs=inputs, overwrite=overwrite)  # fail before the (possibly long) work
    hf_cfg, tensors = hf_state_dict(model, dtype)
    with atomic_output_dir(out_dir, inputs=inputs, overwrite=overwrite) as tmp:
        atomic_write_json(tmp / "config.json", hf_cfg, sort_keys=True)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        written = ["config.json", "model.safetensors"]
        if tokenizer is not None:
            written += _write_tokenizer(tokenizer, model.config, tmp)
    return written


def _tokenizer_mask_id(folder: Path) -> int | None:
    if not (folder / "tokenizer.json").is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder)).mask_token_id


def load_state_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load `sd` into `model`, listing every missing / unexpected / mis-shaped name."""
    own = model.state_dict()
    tied = model.config.tie_word_embeddings
    if tied and _TIED in sd:  # some writers keep the tied copy; it must be the embedding
        if _EMBED in sd and not torch.equal(sd[_TIED], sd[_EMBED]):
            raise ExportError(f"{source}: tie_word_embeddings is true but decoder.weight differs from "
                              f"{_EMBED}; set tie_word_embeddings: false in config.json if they are separate")
        sd = {k: v for k, v in sd.items() if k != _TIED}
    missing = sorted(set(own) - set(sd) - ({_TIED} if tied else set()))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(f"{k}: file {tuple(sd[k].shape)}, model {tuple(own[k].shape)}"
                   for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise ExportError(f"weights in {source} do not fit the model: missing {missing}, "
                          f"unexpected {unexpected}, wrong shapes {wrong}")
    model.load_state_dict(sd, strict=False)  # only the tied decoder.weight is absent, by design


def read_hf_config(path: str | os.PathLike, *, mask_token_id: int | None = None) -> FlexBertConfig:
    """The FlexBertConfig of an HF ModernBERT folder: its config.json through `config_from_hf`.

    The one reader of an HF folder's config, for `load_hf` and for continued pretraining
    (`init_from.hf`, flexbert.train.hf_init).

    Args:
        path: the folder holding config.json.
        mask_token_id: wins over config.json; when neither has one, the folder's tokenizer gives it.
    Raises:
        ExportError: no config.json, or HF settings FlexBERT cannot reproduce (named).
    """
    folder = Path(path)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ExportError(f"{folder} has no config.json; pass an HF ModernBERT folder")
    hf_cfg = json.loads(cfg_file.read_text())
    if mask_token_id is None and "mask_token_id" not in hf_cfg:
        mask_token_id = _tokenizer_mask_id(folder)
    return config_from_hf(hf_cfg, mask_token_id=mask_token_id, source=str(cfg_file))


def load_hf(path: str | os.PathLike, *, mask_token_id: int | None = None,
            attn_backend: str | None = None) -> torch.nn.Module:
    """Build a FlexBertForMaskedLM from an HF ModernBERT folder (config.json + weights).

    Args:
        path: folder with config.json and model.safetensors or pytorch_model.bin.
        mask_token_id: overrides the id from config.json / the folder's tokenizer.
        attn_backend: FlexBERT attention kernel to build with (default: the config default).

    Raises:
        ExportError: unknown or unsupported HF settings (named), or weights that do not match.
    """
    folder = Path(path)
    cfg = read_hf_config(folder, mask_token_id=mask_token_id)
    if attn_backend is not None:
        cfg = dataclasses.replace(cfg, attn_backend=attn_backend)
    model = FlexBertForMaskedLM(cfg)
    load_state_strict(model, read_weights(folder), str(folder))
    return model


def save_flexbert(model: torch.nn.Module, out_dir: str | os.PathLike, *, overwrite: bool = False) -> list[str]:
    """Write a FlexBERT folder: model.safetensors (FlexBERT names) + config.yaml (a `model:` section)."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    check_output_dir(out_dir, overwrite=overwrite)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in _tied_state_dict(model).items()}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"model": dataclasses.asdict(model.config)})))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return ["config.yaml", "model.safetensors"]


def load_flexbert(path: str | os.PathLike, config: Any = None) -> torch.nn.Module:
    """Load a FlexBERT folder (model.safetensors + config.yaml), or `config` instead of its config.yaml."""
    folder = Path(path)
    if config is None:
        if not (folder / "config.yaml").is_file():
            raise ExportError(f"{folder} has no config.yaml; pass the model config (CLI: --config)")
        config = folder / "config.yaml"
    model = FlexBertForMaskedLM(load_model_config(config))
    sd = strip_prefixes(read_weights(folder), set(model.state_dict()))
    load_state_strict(model, sd, str(folder))
    return model
