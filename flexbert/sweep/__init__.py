"""Ablation sweeps: a sweep file -> runs -> local runner or scheduler script -> results and report.

`python -m flexbert.sweep SWEEP.yaml [--dry-run] [--script OUT.sh] [--metric eval_loss]`;
see docs/sweeps.md. Modules: spec (the sweep file), expand (runs and names), runner
(local runs, skip/resume, scripts), collect (per-run results), report (csv, markdown, plots).
"""
from flexbert.sweep.expand import RunPlan, expand
from flexbert.sweep.spec import Sweep, load_sweep

__all__ = ["RunPlan", "Sweep", "expand", "load_sweep"]
