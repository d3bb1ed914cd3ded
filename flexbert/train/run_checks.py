"""Checks of a run that can be made before step 0, without data or a model: each one fails in
preflight (and so in `--dry-run`) rather than minutes or days into the run.

* the LR schedule fits the run (`max_duration=4ba` on a config with a 20-batch warmup and a decay);
* every callback named under `callbacks:` exists, including ones turned off with `false`;
* `export_hf` can be written: the model is exportable and the folder is creatable.
"""
from __future__ import annotations

import os
from typing import Any

from flexbert.config.optim import parse_time
from flexbert.config.strict import ConfigError

__all__ = ["check_run", "check_schedule", "check_callback_names", "check_export_hf"]


def check_run(cfg: Any, mcfg: Any) -> None:
    """All of the checks below, in the order a user would fix them; the first failing one raises."""
    check_schedule(cfg)
    check_callback_names(cfg)
    check_export_hf(cfg, mcfg)


def check_schedule(cfg: Any) -> None:
    """The schedule must be computable over the whole run: warmup + decay inside max_duration.

    Evaluated at the run's last step, in max_duration's unit; schedule times in another unit (tokens
    against batches) cannot be compared before the run and are left to the scheduler. A warmup longer
    than a short smoke run is allowed: the LR then simply stays below its peak.
    """
    from flexbert.train.schedulers import lr_multiplier_at

    end, unit = parse_time(cfg.max_duration, "max_duration")
    try:
        lr_multiplier_at(cfg.scheduler, f"{int(end)}{unit}", f"{int(end)}{unit}")
    except ValueError as e:
        if "cannot convert" in str(e):
            return
        raise ConfigError(f"{e} (a duration that fits any run length: e.g. t_warmup: 0.01dur, t_decay: 0.2dur)") from None


def check_callback_names(cfg: Any) -> None:
    """Every key under `callbacks:` names a registered callback (a misspelt `NAME: false` is not ignored)."""
    from flexbert.train.callbacks import CALLBACKS

    for name in cfg.callbacks:
        if name not in CALLBACKS:
            CALLBACKS.get(name, f"callbacks.{name}")  # raises ConfigError with the choices and the closest


def check_export_hf(cfg: Any, mcfg: Any) -> None:
    """export_hf is written after the whole run: refuse now a model HF cannot represent or a folder we cannot write."""
    folder = cfg.export_hf
    if not folder:
        return
    from flexbert.export.mapping import hf_refusals

    reasons = hf_refusals(mcfg)
    if reasons:
        raise ConfigError(f"export_hf {folder}: this model cannot be exported to Hugging Face ModernBERT: "
                          + "; ".join(reasons) + "; set export_hf: null to keep it in FlexBERT format")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"export_hf {folder} exists and is not a folder; choose another export_hf")
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.exists(parent):  # the nearest existing ancestor is where the folder would be created
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ConfigError(f"export_hf {folder} cannot be created: {parent} is not a writable folder; "
                          "choose another export_hf")
