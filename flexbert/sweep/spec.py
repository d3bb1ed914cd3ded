"""The sweep file: a typed, strictly decoded description of an ablation study.

```yaml
name: blocks                       # default: the sweep file's name without .yaml
base: yamls/demo.yaml              # relative to the working directory, else to this file
overrides: {max_duration: 300ba}   # applied to every run (nested mappings are flattened)
axes:                              # several axes combine as a product
  norm: {model.norm: [layernorm, rmsnorm]}            # a grid axis: one level per value
  block:                                              # a variants axis: named levels
    - {name: base, overrides: {}}
    - {name: swiglu, overrides: {model.hidden_activation: silu}}
variants: [...]                    # shorthand for a variants axis `variant`; runs: rmsnorm__seed=0
seeds: [0, 1]
metric: eval_loss                  # a column of results.csv or a raw logged key
maximize: false                    # default: true for accuracy/score metrics
output: runs/sweeps/blocks         # default: runs/sweeps/<name>
downstream: "python eval.py {checkpoint}"   # optional, prints a JSON line with "score"
```

A grid axis with several keys ties them together (their value lists are zipped and
must have equal lengths), e.g. `{model.mlp: [glu, mlp], model.intermediate_size: [192, 288]}`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from flexbert.config.strict import ConfigError, closest, decode

__all__ = ["VariantSpec", "SweepSpec", "Level", "Axis", "Sweep", "load_sweep", "with_metric", "flatten", "METRICS", "RESERVED_KEYS"]

# Metric aliases -> (column of results.csv, higher is better by default)
METRICS: dict[str, bool] = {
    "eval_loss": False,
    "best_eval_loss": False,
    "eval_accuracy": True,
    "train_loss": False,
    "tokens_per_sec": True,
    "peak_memory_gib": False,
    "wall_time_s": False,
    "downstream_score": True,
}

# Keys the runner sets itself for every run; a sweep may not override them.
RESERVED_KEYS = ("run_name", "seed", "save_folder", "autoresume", "save_overwrite", "loggers.jsonl")


@dataclasses.dataclass
class VariantSpec:
    """One named level of a variants axis."""

    name: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SweepSpec:
    """The sweep file as written (see the module docstring for every key)."""

    base: str
    name: Optional[str] = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    axes: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: Optional[list[VariantSpec]] = None
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    metric: str = "eval_loss"
    maximize: Optional[bool] = None
    output: Optional[str] = None
    downstream: Optional[str] = None
    # How a run is launched: the base YAML and `key=value` overrides are appended.
    # `{python}` is the interpreter running the sweep (local runs only). The training module,
    # not a path to train.py, so a sweep runs from any folder and from an installed wheel.
    command: str = "{python} -m flexbert.train"
    script_command: str = "composer -m flexbert.train"
    # Pass `loggers.jsonl=<run_dir>/metrics.jsonl` (FlexBERT's full-precision metrics file);
    # turn off for a training script without that key: the console log is parsed instead.
    metrics_jsonl: bool = True
    # Load every run's config with FlexBERT's strict loader before launching anything,
    # so a typo in a variant fails in a second instead of after the first runs.
    validate: bool = True

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds is empty; list at least one seed, e.g. seeds: [0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} has duplicates")
        if self.metric not in METRICS and "/" not in self.metric:
            guess = closest(self.metric, METRICS)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise ValueError(
                f"metric '{self.metric}' is unknown; use one of {', '.join(METRICS)} "
                f"or a logged key such as metrics/eval/MaskedAccuracy{hint}"
            )
        if self.variants is not None and "variant" in self.axes:
            raise ValueError("`variants:` is shorthand for an axis called 'variant', which axes already has; rename one")


@dataclasses.dataclass(frozen=True)
class Level:
    """One value of an axis: a filesystem-safe label and the overrides it applies."""

    label: str
    overrides: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Axis:
    """An axis of the sweep; `named` says whether run names read `axis=label` or just `label`."""

    name: str
    levels: tuple[Level, ...]
    named: bool = True


@dataclasses.dataclass
class Sweep:
    """A loaded sweep: the spec plus resolved paths and normalised axes."""

    spec: SweepSpec
    source: str  # the sweep file
    name: str
    base: str  # the base run YAML, as a path usable from the working directory
    output: str
    overrides: dict[str, Any]
    axes: list[Axis]
    maximize: bool

    def run_dir(self, run_name: str) -> str:
        return os.path.join(self.output, "runs", run_name)


def flatten(data: Any, source: str, where: str, prefix: str = "") -> dict[str, Any]:
    """`{model: {norm: x}, seed: 1}` -> `{"model.norm": x, "seed": 1}` (dotted keys kept)."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' in {source} must be a mapping of dotted.key: value, got {data!r}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, source, where, prefix=f"{full}."))
        else:
            out[full] = value
    return out


def _safe(text: str) -> str:
    """A filesystem- and shell-friendly label: keep [A-Za-z0-9._-], map the rest to '-'."""
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in str(text))
    return out.strip("-") or "x"


def _check_label(label: str, source: str, where: str) -> None:
    if label != _safe(label):
        raise ConfigError(
            f"variant name {label!r} at '{where}' in {source} is not filesystem-safe; use letters, digits, '.', '_' or '-' "
            f"(e.g. {_safe(label)!r})"
        )


def _check_keys(overrides: dict[str, Any], source: str, where: str) -> None:
    for key in overrides:
        if key in RESERVED_KEYS:
            raise ConfigError(f"'{where}.{key}' in {source}: {key} is set by the sweep runner for every run; remove it")


def _grid_axis(name: str, data: dict, source: str) -> Axis:
    flat = flatten(data, source, f"axes.{name}")
    if not flat:
        raise ConfigError(f"axis 'axes.{name}' in {source} is empty")
    _check_keys(flat, source, f"axes.{name}")
    lengths = set()
    for key, values in flat.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"'axes.{name}.{key}' in {source} must be a non-empty list of values, got {values!r}")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise ConfigError(
            f"axis 'axes.{name}' in {source} ties several keys whose value lists have different lengths "
            f"({', '.join(f'{k}: {len(v)}' for k, v in flat.items())}); give them equal lengths or split the axis"
        )
    keys = list(flat)
    levels = []
    for i in range(lengths.pop()):
        values = [flat[k][i] for k in keys]
        label = "-".join(_safe(_fmt_label(v)) for v in values)
        levels.append(Level(label, tuple((k, flat[k][i]) for k in keys)))
    return Axis(name, tuple(levels))


def _fmt_label(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _variants_axis(name: str, items: list, source: str) -> Axis:
    if not items:
        raise ConfigError(f"axis 'axes.{name}' in {source} has no variants")
    levels = []
    for i, item in enumerate(items):
        where = f"axes.{name}[{i}]" if name != "variant" else f"variants[{i}]"
        variant = item if isinstance(item, VariantSpec) else decode(VariantSpec, item, source=source, path=where)
        _check_label(variant.name, source, f"{where}.name")
        overrides = flatten(variant.overrides, source, f"{where}.overrides")
        _check_keys(overrides, source, f"{where}.overrides")
        levels.append(Level(variant.name, tuple(overrides.items())))
    return Axis(name, tuple(levels))


def _resolve_base(base: str, source: str) -> str:
    """The base YAML as a path usable from the working directory (relative when inside it)."""
    candidates = [base] if os.path.isabs(base) else [base, os.path.join(os.path.dirname(source), base)]
    for path in candidates:
        if os.path.isfile(path):
            full = os.path.abspath(path)
            rel = os.path.relpath(full)
            return full if rel.startswith("..") else rel
    raise ConfigError(f"'base' in {source}: run config {base!r} not found (looked in {' and '.join(repr(c) for c in candidates)})")


def load_sweep(path: str) -> Sweep:
    """Read and check a sweep file; raises ConfigError naming the key, the file and the fix."""
    from omegaconf import DictConfig, OmegaConf

    if not os.path.isfile(path):
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        node = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors: say which file
        raise ConfigError(f"cannot read sweep file {path}: {e}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"sweep file {path} must hold a mapping (base:, axes:, seeds:, ...) at the top level")
    spec = decode(SweepSpec, node, source=path)
    overrides = flatten(spec.overrides, path, "overrides")
    _check_keys(overrides, path, "overrides")
    axes = []
    for name, data in spec.axes.items():
        if _safe(name) != name:
            raise ConfigError(f"axis name {name!r} in {path} is not filesystem-safe; use letters, digits, '.', '_' or '-'")
        if isinstance(data, list):
            axes.append(_variants_axis(name, data, path))
        elif isinstance(data, dict):
            axes.append(_grid_axis(name, data, path))
        else:
            raise ConfigError(
                f"'axes.{name}' in {path} must be a grid ({{dotted.key: [v1, v2]}}) or a list of variants "
                f"([{{name: ..., overrides: {{...}}}}]), got {data!r}"
            )
    if spec.variants is not None:
        # The shorthand's levels are self-describing names: runs read `rmsnorm__seed=0`.
        axes.append(dataclasses.replace(_variants_axis("variant", list(spec.variants), path), named=False))
    for axis in axes:
        labels = [lv.label for lv in axis.levels]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"axis '{axis.name}' in {path} has levels with the same name: {', '.join(dupes)}; names must be unique")
    name = spec.name or os.path.splitext(os.path.basename(path))[0]
    if _safe(name) != name:
        raise ConfigError(f"'name' in {path} is {name!r}; use letters, digits, '.', '_' or '-'")
    maximize = spec.maximize if spec.maximize is not None else METRICS.get(spec.metric, "accuracy" in spec.metric.lower())
    return Sweep(
        spec=spec,
        source=path,
        name=name,
        base=_resolve_base(spec.base, path),
        output=spec.output or os.path.join("runs", "sweeps", name),
        overrides=overrides,
        axes=axes,
        maximize=bool(maximize),
    )


def with_metric(sweep: Sweep, metric: str, maximize: Optional[bool] = None) -> Sweep:
    """The same sweep ranked by another metric (the CLI's --metric); checked like the file's."""
    try:
        spec = dataclasses.replace(sweep.spec, metric=metric, maximize=maximize)
    except ValueError as e:
        raise ConfigError(f"--metric: {e}") from None
    best = maximize if maximize is not None else METRICS.get(metric, "accuracy" in metric.lower())
    return dataclasses.replace(sweep, spec=spec, maximize=bool(best))
