"""What a run resumes from (`load_path` or `autoresume`), checked before Composer loads anything.

Composer's own loader unpickles a checkpoint, so a file reaches it only after
flexbert.checkpoint_reader has read it completely as data. On top of that:

* autoresume skips checkpoints that cannot be read completely (a truncated latest file, say):
  they are set aside as `<name>.unreadable`, the `latest-rank0.pt` link is pointed at the newest
  intact checkpoint, and one line says so; with none intact the error names each file and why;
* the run's model must be the checkpoint's: its `config.yaml` (the model section the checkpoint
  was trained with) and its tensors' names and shapes are compared with this run's before any
  weight is loaded, and a difference is refused naming the keys. The save folder's `config.yaml`
  is written only after this check, so a run of another architecture never rewrites it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from flexbert.checkpoint_reader import CheckpointError, model_state_dict, read_checkpoint, strip_prefixes
from flexbert.config.model import load_model_config
from flexbert.errors import ConfigError
from flexbert.outputs import atomic_symlink, set_aside

__all__ = ["RUNTIME_ONLY_MODEL_KEYS", "ResumePoint", "resume_point", "check_same_architecture",
           "check_save_folder_architecture", "intact_latest_checkpoint", "optimizer_hyperparameters",
           "reapply_hyperparameters"]

log = logging.getLogger(__name__)

# Model keys that do not change what the weights compute, so a resumed run may change them:
# how attention runs, memory/speed switches, regularisation, and initialisation (unused on resume).
RUNTIME_ONLY_MODEL_KEYS = frozenset({
    "attn_backend", "gradient_checkpointing", "sparse_prediction", "embedding_dropout", "attention_dropout",
    "attn_out_dropout", "mlp_dropout", "classifier_dropout", "init", "initializer_range",
    "initializer_cutoff_factor",
})


@dataclasses.dataclass
class ResumePoint:
    """A checkpoint this run continues from, already read completely as data."""

    path: str  # local file handed to Composer
    source: str  # what the user named (load_path, or the save folder's latest checkpoint)
    state: dict[str, Any]
    from_load_path: bool  # False: autoresume found it in save_folder


def _batch_of(name: str, rank: str = "0") -> int | None:
    found = re.fullmatch(rf"ep\d+-ba(\d+)-rank{rank}\.pt", name)
    return int(found.group(1)) if found else None


def intact_latest_checkpoint(folder: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest rank-0 checkpoint in `folder` that reads completely, with its contents.

    Unreadable newer ones are renamed `<name>.unreadable` (nothing is deleted) and
    `latest-rank0.pt` is pointed at the intact one, so Composer's autoresume loads it.
    Returns None when the folder holds no checkpoint at all.

    Raises:
        ConfigError: checkpoints exist but none reads completely (each file and why).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = sorted((p for p in folder.iterdir() if not p.is_symlink() and _batch_of(p.name) is not None),
                        key=lambda p: _batch_of(p.name), reverse=True)
    failures = []
    for path in candidates:
        try:
            state = read_checkpoint(path, role="checkpoint")
        except CheckpointError as e:
            failures.append((path, str(e)))
            continue
        for bad, why in failures:
            aside = set_aside(bad, ".unreadable")
            log.warning("autoresume: %s cannot be read (%s); moved it to %s", bad, why, aside.name)
        latest = folder / "latest-rank0.pt"
        if failures or not (latest.is_symlink() and Path(os.readlink(latest)).name == path.name):
            atomic_symlink(path.name, latest)
        if failures:
            print(f"autoresume: resuming from {path.name}, the newest intact checkpoint "
                  f"({len(failures)} newer one(s) unreadable, set aside as *.unreadable)")
        return path, state
    if failures:
        listed = "\n  ".join(f"{p.name}: {why}" for p, why in failures)
        raise ConfigError(f"autoresume: no checkpoint in {folder} can be read completely:\n  {listed}\n"
                          "Restore a checkpoint from a backup, or start afresh in another save_folder.")
    return None


def _fetch_remote(url: str) -> str:
    """Download a remote load_path to a local file (so it can be checked before Composer loads it)."""
    from composer.utils import get_file

    local = os.path.join(tempfile.mkdtemp(prefix="flexbert-load-"), os.path.basename(url.rstrip("/")) or "checkpoint.pt")
    try:
        get_file(url, local)
    except Exception as e:  # noqa: BLE001 - any transport error: one line naming the key and URL
        raise ConfigError(f"load_path {url}: cannot download it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return local


def resume_point(cfg: Any) -> ResumePoint | None:
    """The checkpoint this run will continue from, read and checked; None for a fresh start.

    Run on global rank 0 only (it may repair the save folder's `latest-rank0.pt` link).
    """
    if cfg.autoresume and cfg.save_folder:
        found = intact_latest_checkpoint(cfg.save_folder)
        if found is not None:
            path, state = found
            return ResumePoint(path=str(path), source=f"autoresume ({path})", state=state, from_load_path=False)
    if cfg.load_path:
        path = _fetch_remote(cfg.load_path) if "://" in cfg.load_path else cfg.load_path
        try:
            state = read_checkpoint(path, role="load_path")
        except CheckpointError as e:
            raise ConfigError(str(e)) from None
        return ResumePoint(path=path, source=f"load_path {cfg.load_path}", state=state, from_load_path=True)
    return None


def _model_diff(saved: Any, run: Any) -> list[str]:
    return [f"model.{f.name}: checkpoint {getattr(saved, f.name)!r}, run {getattr(run, f.name)!r}"
            for f in dataclasses.fields(run)
            if f.name not in RUNTIME_ONLY_MODEL_KEYS and getattr(saved, f.name) != getattr(run, f.name)]


def _saved_model_config(folder: str | os.PathLike) -> Any | None:
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_model_config(path)
    except (ConfigError, ValueError, TypeError) as e:
        raise ConfigError(f"{path} (the model the checkpoints were trained with) cannot be read: {e}") from None


def check_same_architecture(point: ResumePoint, run_model_cfg: Any, model: torch.nn.Module) -> None:
    """Refuse resuming `point` into a model of another architecture, naming what differs.

    Args:
        point: the checkpoint to resume from.
        run_model_cfg: this run's FlexBertConfig.
        model: the FlexBertForMaskedLM built from it (its state dict gives names and shapes).
    Raises:
        ConfigError: keys of config.yaml that differ, or tensors that are missing, unexpected or
            of another shape.
    """
    problems = []
    saved = _saved_model_config(Path(point.path).parent)
    if saved is not None:
        problems += _model_diff(saved, run_model_cfg)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        ckpt = strip_prefixes(model_state_dict(point.state, point.path), set(own))
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    tied = {"decoder.weight"} if run_model_cfg.tie_word_embeddings else set()
    missing = sorted(set(own) - set(ckpt) - tied)
    unexpected = sorted(set(ckpt) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(ckpt[k].shape)}, run {own[k]}"
                    for k in set(ckpt) & set(own) if tuple(ckpt[k].shape) != own[k])
    for title, items in (("tensors missing in the checkpoint", missing), ("tensors not in this run's model", unexpected),
                         ("tensor shapes differ", shapes)):
        if items:
            shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
            problems.append(f"{title} ({len(items)}): {', '.join(shown)}")
    if problems:
        raise ConfigError(f"cannot resume from {point.source}: this run's model differs from the checkpoint's:\n  "
                          + "\n  ".join(problems)
                          + "\nResume with the checkpoint's model section, or start a new phase from its weights "
                            "with init_from.")


def check_save_folder_architecture(cfg: Any, run_model_cfg: Any) -> None:
    """Refuse writing a run of another architecture into a save folder that holds checkpoints.

    The folder's config.yaml describes its checkpoints (export reads it); replacing it with
    another model's would make them unexportable. `save_overwrite: true` says the user means to.
    """
    folder = cfg.save_folder
    if not folder or cfg.save_overwrite or not os.path.isdir(folder):
        return
    if not any(_batch_of(name, rank=r"\d+") is not None for name in os.listdir(folder)):
        return
    saved = _saved_model_config(folder)
    if saved is None:
        return
    diff = _model_diff(saved, run_model_cfg)
    if diff:
        raise ConfigError(f"save_folder {folder} holds checkpoints of another model (its config.yaml):\n  "
                          + "\n  ".join(diff)
                          + "\nChoose another save_folder, or resume with the checkpoint's model section.")


# Param-group keys that come from the run's `optimizer:` section. Others are the optimizer's own
# bookkeeping (optimi's `setup` flag, kernel choices) and must keep the checkpoint's values.
HYPERPARAMETER_KEYS = ("lr", "betas", "eps", "weight_decay", "max_lr")


def optimizer_hyperparameters(optimizers: list[torch.optim.Optimizer]) -> list[list[dict[str, Any]]]:
    """This run's optimizer settings per param group (lr, betas, eps, weight decay), before any loading."""
    return [[{k: g[k] for k in HYPERPARAMETER_KEYS if k in g} for g in opt.param_groups] for opt in optimizers]


def reapply_hyperparameters(state: Any, fresh: list[list[dict[str, Any]]]) -> list[str]:
    """After a resume, put this run's optimizer settings back over the checkpoint's; return what changed.

    Composer restores the param groups and the LR schedule's base LRs from the checkpoint, so a resumed
    run would silently keep the old LR. The run config is what the user asked for: its peak LR becomes
    the schedule's base (the schedule's current multiplier is kept) and its other settings apply as given.
    """
    changes = []
    for opt, groups in zip(state.optimizers, fresh):
        for i, (group, hyper) in enumerate(zip(opt.param_groups, groups)):
            old_peak = group.get("initial_lr", group["lr"])
            for key, value in hyper.items():
                old = old_peak if key == "lr" else group.get(key)
                if old == value:  # untouched: an unchanged config resumes bit for bit
                    continue
                changes.append(f"{key} (group {i}): checkpoint {old}, run {value}")
                if key == "lr":
                    multiplier = group["lr"] / old_peak if old_peak else 1.0
                    group["initial_lr"], group["lr"] = value, value * multiplier
                else:
                    group[key] = value
    if changes:
        for scheduler in state.schedulers:
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in scheduler.optimizer.param_groups]
    return changes
