"""Expand a sweep into runs with stable, readable, filesystem-safe names, and their command lines.

Order is deterministic: the product of the axes in file order (the last axis varies fastest),
seeds innermost, so all seeds of one variant sit together. A run is named after its levels,
`norm=rmsnorm__mlp=swiglu__seed=1`; the variant (the group averaged over seeds in the report)
is the same name without the seed part. Names depend only on the labels, never on values'
order in a dict or on hashes, so re-expanding an edited sweep keeps the finished runs' folders.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shlex
import sys
from typing import Any

from flexbert.sweep.spec import Sweep

__all__ = ["RunPlan", "expand", "format_value", "launch_argv", "script_line"]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One training run of a sweep."""

    name: str  # e.g. norm=rmsnorm__seed=0
    variant: str  # e.g. norm=rmsnorm (the run name without the seed)
    seed: int
    levels: tuple[tuple[str, str], ...]  # (axis, label) in axis order
    overrides: tuple[tuple[str, Any], ...]  # sweep-wide then per-axis, later wins
    run_dir: str

    def override_dict(self) -> dict[str, Any]:
        return dict(self.overrides)


def expand(sweep: Sweep) -> list[RunPlan]:
    """All runs of `sweep` in their deterministic order."""
    runs = []
    for combo in itertools.product(*(axis.levels for axis in sweep.axes)):
        levels = tuple((axis.name, level.label) for axis, level in zip(sweep.axes, combo))
        variant = "__".join(f"{axis.name}={level.label}" if axis.named else level.label
                            for axis, level in zip(sweep.axes, combo)) or "base"
        merged: dict[str, Any] = dict(sweep.overrides)
        for level in combo:
            merged.update(level.overrides)
        for seed in sweep.spec.seeds:
            name = f"{variant}__seed={seed}"
            runs.append(RunPlan(name, variant, seed, levels, tuple(merged.items()), sweep.run_dir(name)))
    return runs


def format_value(value: Any) -> str:
    """A value as OmegaConf's dotlist parser reads it back (`true`, `null`, `[1, 2]`, `3e-3`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)  # JSON flow style is valid YAML
    return str(value)


def run_overrides(sweep: Sweep, run: RunPlan) -> list[str]:
    """`key=value` arguments for one run: the sweep's, then what the runner owns.

    `autoresume=true` is always passed: a fresh run starts from scratch, a rerun of an
    interrupted one continues from its last checkpoint in the same save_folder (Composer
    refuses autoresume with save_overwrite, hence `save_overwrite=false`).
    """
    args = [f"{k}={format_value(v)}" for k, v in run.overrides]
    args += [f"run_name={run.name}", f"seed={run.seed}", f"save_folder={run.run_dir}", "autoresume=true", "save_overwrite=false"]
    if sweep.spec.metrics_jsonl:
        # FlexBERT takes a relative loggers.jsonl inside save_folder: <run_dir>/metrics.jsonl.
        args.append("loggers.jsonl=metrics.jsonl")
    return args


def launch_argv(sweep: Sweep, run: RunPlan, *, script: bool = False) -> list[str]:
    """The argv launching `run`: the command template, the base YAML, then the overrides."""
    template = sweep.spec.script_command if script else sweep.spec.command
    python = "python" if script else sys.executable
    try:
        head = [part.format(python=python) for part in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as e:
        key = "script_command" if script else "command"
        raise ValueError(f"'{key}' in {sweep.source} ({template!r}) is not a valid template: {e}; only {{python}} is substituted") from None
    return head + [sweep.base] + run_overrides(sweep, run)


def script_line(sweep: Sweep, run: RunPlan) -> str:
    """One self-contained shell line for a scheduler: train, then mark the run DONE on success.

    An empty DONE (from `touch`) counts as finished; the metrics come from metrics.jsonl.
    """
    train = shlex.join(launch_argv(sweep, run, script=True))
    return f"{train} && touch {shlex.quote(os.path.join(run.run_dir, 'DONE'))}"
