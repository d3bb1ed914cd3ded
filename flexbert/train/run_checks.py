"""Checks of a run that can be made before step 0, without data or a model: each one fails in
preflight (and so in `--dry-run`) rather than minutes or days into the run.

* every block name of the model (`model.norm`, `model.mlp`, `model.attn_backend`, ...) is registered;
* the LR schedule is a registered one, its keys are what it requires, and it fits the run (`max_duration=4ba` on a config with a 20-batch warmup and a decay);
* every callback named under `callbacks:` exists, including ones turned off with `false`;
* `export_hf` can be written: the model is exportable, the folder is creatable and it is not (and
  does not contain) an input of the run or the save folder: the export replaces the whole folder;
* every remote (s3://) path is reachable with the credentials set (`flexbert.train.remote_checks`).
"""
from __future__ import annotations

import os
from typing import Any

from flexbert.config.model import FlexBertConfig
from flexbert.config.optim import parse_time
from flexbert.config.run import RunConfig
from flexbert.errors import ConfigError
from flexbert.export.mapping import hf_refusals
from flexbert.model.registries import check_block_names
from flexbert.outputs import OutputError, check_output_dir
from flexbert.train.callbacks import CALLBACKS
from flexbert.train.remote_checks import check_remote_paths
from flexbert.train.schedulers import check_schedule_config, lr_multiplier_at

__all__ = ["check_run", "check_block_names", "check_schedule", "check_callback_names", "check_export_hf", "check_remote_paths"]


def check_run(cfg: RunConfig, mcfg: FlexBertConfig, source: str | None = None) -> None:
    """All of the checks below, in the order a user would fix them; the first failing one raises.

    `source` (the run file) is named in the block-name error when given.
    """
    check_block_names(mcfg, source)
    check_schedule(cfg)
    check_callback_names(cfg)
    check_export_hf(cfg, mcfg)
    check_remote_paths(cfg)


def check_schedule(cfg: Any) -> None:
    """The schedule must be computable over the whole run: warmup + decay inside max_duration.

    Evaluated at the run's last step, in max_duration's unit; schedule times in another unit (tokens
    against batches) cannot be compared before the run and are left to the scheduler. A warmup longer
    than a short smoke run is allowed: the LR then simply stays below its peak.
    """
    check_schedule_config(cfg.scheduler)  # a registered name, and what that schedule requires
    end, unit = parse_time(cfg.max_duration, "max_duration")
    try:
        lr_multiplier_at(cfg.scheduler, f"{int(end)}{unit}", f"{int(end)}{unit}")
    except ValueError as e:
        if "cannot convert" in str(e):
            return
        raise ConfigError(f"{e} (a duration that fits any run length: e.g. t_warmup: 0.01dur, t_decay: 0.2dur)") from None


def check_callback_names(cfg: Any) -> None:
    """Every key under `callbacks:` names a registered callback (a misspelt `NAME: false` is not ignored)."""
    for name in cfg.callbacks:
        if name not in CALLBACKS:
            CALLBACKS.get(name, f"callbacks.{name}")  # raises ConfigError with the choices and the closest


def check_export_hf(cfg: Any, mcfg: Any) -> None:
    """export_hf is written after the whole run: refuse now a model HF cannot represent or a folder we cannot write."""
    folder = cfg.export_hf
    if not folder:
        return
    reasons = hf_refusals(mcfg)
    if reasons:
        raise ConfigError(f"export_hf {folder}: this model cannot be exported to Hugging Face ModernBERT: "
                          + "; ".join(reasons) + "; set export_hf: null to keep it in FlexBERT format")
    try:  # the export replaces the folder at the end of the run: it must not hold anything the run reads
        check_output_dir(folder, inputs=_run_inputs(cfg), overwrite=True, name="export_hf")
    except OutputError as e:
        raise ConfigError(str(e)) from None
    save = cfg.save_folder
    if save and "://" not in save and os.path.realpath(save).startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep):
        raise ConfigError(f"export_hf {folder} contains save_folder {save}: the export would delete the checkpoints; "
                          "choose an export_hf outside it (inside save_folder is fine)")
    if save and "://" not in save and os.path.realpath(save) == os.path.realpath(folder):
        raise ConfigError(f"export_hf {folder} is the same path as save_folder {save}: the export would delete the "
                          "checkpoints; choose another export_hf (a folder inside save_folder is fine)")


def _run_inputs(cfg: Any) -> list[tuple[str, Any]]:
    """(config key, local path) of everything the run reads from disk."""
    inputs: list[tuple[str, Any]] = [("tokenizer", cfg.tokenizer)]
    for section, data in (("data", cfg.data), ("eval_data", cfg.eval_data)):
        if data is None:
            continue
        for s in data.train_streams() + list(data.eval_streams):
            if not s.remote:  # a remote stream's local is a cache the run writes, not an input
                inputs.append((f"{section} local", s.local))
    if cfg.load_path and "://" not in cfg.load_path:
        inputs.append(("load_path", cfg.load_path))
    if cfg.init_from is not None:
        inputs += [("init_from.path", cfg.init_from.path or None), ("init_from.hf", cfg.init_from.hf)]
    return inputs
