"""Starting a training phase from a previous phase's checkpoint (`init_from`).

ModernBERT trains in phases (pretraining at 1024 tokens, context extension at 8192 with
new RoPE thetas, a final decay). A phase is a *new run*: time, LR schedule, data position
and batch-size warmup start from zero. What carries over:

* weights: every trainable parameter of the previous phase, copied into a model built
  from the *new* phase's model config. Buffers are not copied: RoPE frequencies are
  derived from `global_rope_theta` / `local_rope_theta` / `max_position_embeddings` of
  the new config, so a theta change really changes the model.
* optimizer moments (`load_optimizer: true`): the per-parameter state (Adam moments,
  step counts) only; the new phase's LR, betas and weight decay are kept.

A checkpoint whose parameters do not match the new model (other sizes, other
architecture) is refused with the list of mismatching tensors.

`initial_weights` also serves the two other sources of `init_from`: a Hugging Face ModernBERT
folder (`hf:`, flexbert/train/hf_init.py) and a smaller model tiled into this one
(`tile: true`, flexbert/train/tiling.py).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from flexbert import checkpoint_reader
from flexbert.config.model import load_model_config
from flexbert.train.hf_init import hf_model_config, hf_weights
from flexbert.train.tiling import tile_weights

__all__ = ["read_checkpoint", "checkpoint_model_weights", "load_phase_weights", "load_phase_optimizer", "initial_weights"]

#: Prefix of the FlexBertForMaskedLM inside the Composer wrapper's state dict.
PREFIX = "model."


def read_checkpoint(path: str) -> dict[str, Any]:
    """Load a (monolithic) Composer checkpoint file on CPU, as data only; the error names the path."""
    if os.path.isdir(path):
        raise FileNotFoundError(
            f"init_from.path {path} is a folder; point it at a checkpoint file, e.g. {os.path.join(path, 'latest-rank0.pt')}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_from.path {path} does not exist")
    return checkpoint_reader.read_checkpoint(path, role="init_from.path")


def checkpoint_model_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The FlexBertForMaskedLM weights of a Composer checkpoint, without the `model.` prefix."""
    try:
        state = ckpt["state"]["model"]
    except (KeyError, TypeError):
        raise ValueError("this file is not a Composer checkpoint (no state.model); was it written by train.py?") from None
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def load_phase_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> int:
    """Copy the previous phase's parameters into `model` (built from the new config).

    Returns the number of tensors copied. Raises ValueError naming every missing,
    unexpected or mis-shaped parameter (up to 20 of each).
    """
    params = dict(model.named_parameters())
    # state_dict also names tied aliases (decoder.weight == tok_embeddings.weight) and buffers
    known = set(model.state_dict())
    missing = [k for k in params if k not in weights]
    unexpected = [k for k in weights if k not in known]
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(p.shape)}"
        for k, p in params.items()
        if k in weights and weights[k].shape != p.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("shape mismatch", shapes), ("missing in checkpoint", missing), ("not in this model", unexpected)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                parts.append(f"{title} ({len(items)}):\n  " + "\n  ".join(shown))
        raise ValueError(
            f"checkpoint {source} does not match the model built from this run's model config; "
            f"change the model section to the previous phase's architecture (sizes may not change between phases)\n"
            + "\n".join(parts)
        )
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(weights[k].to(dtype=p.dtype))
    return len(params)


def load_phase_optimizer(state: Any, ckpt: dict[str, Any]) -> None:
    """Load optimizer moments from `ckpt` into Composer `state`, keeping this phase's hyperparameters.

    The saved param groups carry the old phase's lr / initial_lr / weight_decay / betas; the
    new phase's values (already set by the optimizer builder and the scheduler) are put back
    after loading, so only per-parameter state carries over.
    """
    if "optimizers" not in ckpt.get("state", {}):
        raise ValueError("init_from.load_optimizer: true, but the checkpoint holds no optimizer state (saved weights-only?)")
    optimizers = list(state.optimizers)
    fresh = [[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] for opt in optimizers]
    state.load_optim_state(ckpt["state"])
    for opt, groups in zip(optimizers, fresh):
        if len(opt.param_groups) != len(groups):
            raise ValueError("the checkpoint's optimizer has a different number of parameter groups than this run's")
        for group, hyper in zip(opt.param_groups, groups):
            group.update(hyper)


def _small_config_beside(path: str) -> Any:
    """The model config of a checkpoint: the `model:` section of config.yaml in its folder."""
    cfg_file = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    if not os.path.isfile(cfg_file):
        raise ValueError(f"init_from.tile needs the source model's config: {cfg_file} does not exist "
                         "(train.py writes config.yaml into save_folder beside the checkpoints)")
    return load_model_config(cfg_file)


def initial_weights(init: Any, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """Weights to copy into `model` for `init` (an InitFromConfig).

    Returns (weights with FlexBERT names, the Composer checkpoint when one was read and its
    optimizer state may be used, a name of the source for messages).
    """
    cfg = model.config
    if init.hf:
        if not init.tile:
            return hf_weights(init.hf, cfg), None, init.hf
        small_cfg = hf_model_config(init.hf, {}, None)
        small = hf_weights(init.hf, small_cfg)
        source, ckpt = init.hf, None
    else:
        ckpt = read_checkpoint(init.path)
        if not init.tile:
            return checkpoint_model_weights(ckpt), ckpt, init.path
        small_cfg = _small_config_beside(init.path)
        small = checkpoint_model_weights(ckpt)
        source, ckpt = init.path, None

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tiled = tile_weights(small, small_cfg, cfg, large_names=shapes)
    if cfg.tie_word_embeddings:
        tiled.pop("decoder.weight", None)
    return tiled, None, f"{source} (tiled)"
