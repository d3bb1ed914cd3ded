"""Optimizer and learning-rate schedule configs (plain dataclasses, no Composer here).

Times in schedules are strings in Composer's units: ``tok`` (real tokens), ``ba`` (optimizer
steps), ``sp`` (samples) and ``dur`` (a fraction of the run's ``max_duration``). Values may use
underscores or scientific notation (``3_000_000_000tok``, ``3e9tok``); ``parse_time`` turns them
into ``(value, unit)`` and every error names the config key.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Literal

__all__ = ["OptimizerConfig", "SchedulerConfig", "parse_time", "TIME_UNITS", "NO_DECAY_ROLES"]

#: Units a schedule time may use. Epochs are left out on purpose: with packing, an epoch is not a
#: fixed number of steps or tokens, so an epoch-based LR schedule would drift with the data.
TIME_UNITS = ("tok", "ba", "sp", "dur")

#: Parameter roles that `OptimizerConfig.no_decay_for` may exempt from weight decay.
NO_DECAY_ROLES = ("norm", "bias", "embeddings")

_TIME_RE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)\s*([a-z]+)\s*$")


def parse_time(text: str, key: str = "time") -> tuple[float, str]:
    """Parse a Composer-style time string into ``(value, unit)``.

    Args:
        text: e.g. ``"3000000000tok"``, ``"3e9tok"``, ``"500ba"``, ``"0.1dur"``.
        key: the config key holding `text`, used in the error message.

    Returns:
        The value (an int-valued float for tok/ba/sp, a fraction in [0, 1] for dur) and the unit.
    """
    if not isinstance(text, str):
        raise ValueError(f"{key} must be a time string such as '3000000000tok', '500ba' or '0.1dur', got {text!r}")
    m = _TIME_RE.match(text)
    if m is None:
        raise ValueError(f"{key} = {text!r} is not a time string; write a number and a unit, e.g. "
                         f"'3000000000tok', '500ba', '1000sp' or '0.1dur' (units: {', '.join(TIME_UNITS)})")
    value, unit = float(m.group(1).replace("_", "")), m.group(2)
    if unit not in TIME_UNITS:
        extra = "; epochs are not fixed in tokens or steps with packing, use tok, ba, sp or dur" if unit == "ep" else ""
        raise ValueError(f"{key} = {text!r} has unit '{unit}'; choices: {', '.join(TIME_UNITS)}{extra}")
    if unit == "dur":
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} = {text!r}: a 'dur' time is a fraction of the run, between 0 and 1")
    elif not value.is_integer():
        raise ValueError(f"{key} = {text!r}: '{unit}' counts whole units; use an integer")
    return value, unit


@dataclasses.dataclass
class OptimizerConfig:
    """Optimizer settings; the defaults are ModernBERT-base's pretraining values.

    Weight decay semantics (``decoupled_weight_decay``):
      * ``true`` (the ModernBERT recipe, "decoupled weight decay 1e-5"): each step multiplies the
        weights by ``1 - weight_decay * lr_t / lr``, i.e. the decay follows the LR *schedule* but
        not the LR *value* (optimi's ``decouple_lr=True``). At the peak LR a step decays weights by
        exactly ``weight_decay``.
      * ``false``: PyTorch AdamW's coupled form, ``1 - lr_t * weight_decay`` per step.

    ``no_decay_for`` lists parameter roles exempt from weight decay: ``norm`` (weights of norm
    layers), ``bias`` (every bias) and ``embeddings`` (embedding tables, including a decoder tied
    to them). Note: ModernBERT's released configs only exempt 1-D parameters (norms and biases);
    use ``[norm, bias]`` to reproduce them exactly.

    ``gradient_clipping`` (max global grad norm) is for ``adamw`` only: StableAdamW already clips
    each tensor's update (``lr / max(1, RMS(g / sqrt(v)))``), which replaces gradient clipping.
    """

    name: Literal["stable_adamw", "adamw"] = "stable_adamw"
    lr: float = 8e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 1e-5
    decoupled_weight_decay: bool = True
    no_decay_for: list[str] = dataclasses.field(default_factory=lambda: ["norm", "bias", "embeddings"])
    gradient_clipping: float | None = None

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"optimizer.betas[{i}] must be in [0, 1), got {beta}")
        if self.eps < 0:
            raise ValueError(f"optimizer.eps must be >= 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if self.decoupled_weight_decay and self.weight_decay >= 1e-2:
            # A common mix-up: AdamW-style values (0.01-0.1) under fully decoupled decay shrink
            # weights by 1-10% per step at peak LR and destroy the model within a few hundred steps.
            raise ValueError(
                f"optimizer.weight_decay = {self.weight_decay} with decoupled_weight_decay: true decays weights by "
                f"{self.weight_decay:.0%} per step at peak LR; decoupled values are ~1e-5 (ModernBERT). "
                f"Lower it, or set decoupled_weight_decay: false for AdamW-style (lr-scaled) decay")
        bad = [r for r in self.no_decay_for if r not in NO_DECAY_ROLES]
        if bad:
            raise ValueError(f"optimizer.no_decay_for has unknown role(s) {bad}; choices: {', '.join(NO_DECAY_ROLES)}")
        if self.gradient_clipping is not None:
            if not self.gradient_clipping > 0:
                raise ValueError(f"optimizer.gradient_clipping must be > 0 or null, got {self.gradient_clipping}")
            if self.name == "stable_adamw":
                raise ValueError(
                    "optimizer.gradient_clipping is set with name: stable_adamw, whose per-tensor update clipping "
                    "replaces gradient clipping; set gradient_clipping: null, or use name: adamw to clip gradients")


@dataclasses.dataclass
class SchedulerConfig:
    """Learning-rate schedule: a multiplier of ``optimizer.lr`` over training time.

    ``name`` picks a schedule from the registry ``flexbert.train.schedulers.SCHEDULES`` (checked,
    with what each schedule requires of the keys below, in preflight and ``--dry-run``). Shipped
    (``alpha_i`` is the multiplier at step 0, ``alpha_f`` the final one):
      * ``warmup_stable_decay``: linear warmup ``alpha_i -> 1`` over ``t_warmup``, constant 1, then
        over the last ``t_decay`` of the run a decay ``1 -> alpha_f`` shaped by ``decay_shape``
        (``linear``: 1 - f; ``one_minus_sqrt``: 1 - sqrt(f), f the fraction of the decay done).
        ``t_decay`` defaults to ``0tok``: no decay, as in ModernBERT's pretraining phase.
      * ``one_minus_sqrt``: the same with a 1-sqrt decay; ``t_decay`` defaults to ``1dur`` (decay
        over the whole run, as in ModernBERT's final decay phase). Set ``t_warmup: 0tok`` for it.
      * ``constant_with_warmup``: warmup, then 1 to the end.
      * ``cosine``: warmup, then a cosine from 1 to ``alpha_f`` at ``max_duration``.
    ``t_decay: null`` (the default) means the schedule's own default.
    """

    name: str = "warmup_stable_decay"
    t_warmup: str = "3000000000tok"
    t_decay: str | None = None
    decay_shape: Literal["linear", "one_minus_sqrt"] = "one_minus_sqrt"
    alpha_i: float = 0.0
    alpha_f: float = 0.0

    def __post_init__(self):
        warm_v, warm_u = parse_time(self.t_warmup, "scheduler.t_warmup")
        if self.t_decay is not None:
            decay_v, decay_u = parse_time(self.t_decay, "scheduler.t_decay")
            if warm_u == decay_u == "dur" and warm_v + decay_v > 1.0:
                raise ValueError(f"scheduler.t_warmup ({self.t_warmup}) + t_decay ({self.t_decay}) exceed the whole "
                                 f"run; shorten one of them")
        for key in ("alpha_i", "alpha_f"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"scheduler.{key} is a multiplier of optimizer.lr in [0, 1], got {value}")

    @property
    def warmup(self) -> tuple[float, str]:
        """``t_warmup`` parsed as ``(value, unit)``."""
        return parse_time(self.t_warmup, "scheduler.t_warmup")
