"""Learning-rate schedules as Composer schedulers, plus a State-free evaluator.

A schedule returns a multiplier of ``optimizer.lr``. Each time in the config is read in its own
unit: a warmup in ``tok`` compares with ``state.timestamp.token``, so batch-size warmup (which
changes tokens per step) never distorts a token-based schedule. ``dur`` times are fractions of
``state.max_duration`` and take its unit. Two times are only ever compared when they are in the
same unit; tokens, samples and batches are never converted into each other (their ratios change
with packing and batch-size warmup), and asking for that is an error that says what to change.

Formulas (f is the fraction of the phase done, clamped to [0, 1]):
  warmup        alpha_i + (1 - alpha_i) * t / t_warmup
  decay         alpha_f + (1 - alpha_f) * (1 - f)          (decay_shape linear)
                alpha_f + (1 - alpha_f) * (1 - sqrt(f))    (decay_shape one_minus_sqrt)
                with f = (t - (max_duration - t_decay)) / t_decay
  cosine        alpha_f + (1 - alpha_f) * (1 + cos(pi f)) / 2, f = (t - t_warmup) / (max_duration - t_warmup)
Warmup-stable-decay is min(warmup, decay), a trapezoid.
"""
from __future__ import annotations

import math
from typing import Callable, Union

from composer.core import State, Time, TimeUnit
from composer.optim import ComposerScheduler

from flexbert.config.optim import SchedulerConfig, parse_time

__all__ = [
    "WarmupStableDecayScheduler", "OneMinusSqrtScheduler", "ConstantWithWarmupScheduler", "CosineWithWarmupScheduler",
    "build_scheduler", "lr_multiplier_at",
]

TimeLike = Union[str, Time]
_COMPOSER_UNIT = {"tok": TimeUnit.TOKEN, "ba": TimeUnit.BATCH, "sp": TimeUnit.SAMPLE, "dur": TimeUnit.DURATION}


def _as_pair(t: TimeLike, key: str) -> tuple[float, str]:
    """A time string or composer Time -> (value, unit string)."""
    if isinstance(t, Time):
        unit = t.unit.value
        if unit == "ep":
            raise ValueError(f"{key} is in epochs; give it in tok, ba, sp or dur")
        return float(t.value), unit
    return parse_time(t, key)


def _multiplier(cfg: SchedulerConfig, now: Callable[[str, str], float], max_value: float, max_unit: str,
                ssr: float = 1.0) -> float:
    """The LR multiplier for `cfg` at the time given by `now(unit, key)`.

    Args:
        cfg: the schedule.
        now: current time in a unit; `key` names the config time needing it (for errors).
        max_value, max_unit: the run's max_duration.
        ssr: Composer's scale-schedule ratio, applied to absolute (non-dur) times.
    """

    def resolve(pair: tuple[float, str]) -> tuple[float, str]:
        value, unit = pair
        return (value * max_value, max_unit) if unit == "dur" else (value * ssr, unit)

    def need_same_unit(key: str, unit: str) -> None:
        if unit != max_unit:
            raise ValueError(
                f"scheduler.{key} is in '{unit}' but max_duration is in '{max_unit}'; the two cannot be converted "
                f"(tokens and samples per step vary with packing and batch-size warmup). Give {key} in "
                f"'{max_unit}' or 'dur', or max_duration in '{unit}'")

    warm_v, warm_u = resolve(cfg.warmup)
    if cfg.name == "cosine":  # the cosine starts where the warmup ends: both in max_duration's unit
        need_same_unit("t_warmup", warm_u)
    if warm_v > 0:
        warm = cfg.alpha_i + (1.0 - cfg.alpha_i) * min(1.0, max(0.0, now(warm_u, "t_warmup") / warm_v))
    else:
        warm = 1.0
    if cfg.name == "constant_with_warmup":
        return warm

    if cfg.name == "cosine":
        t = now(max_unit, "t_warmup")
        if t < warm_v:
            return warm
        span = max_value - warm_v
        f = 1.0 if span <= 0 else min(1.0, (t - warm_v) / span)
        return cfg.alpha_f + (1.0 - cfg.alpha_f) * 0.5 * (1.0 + math.cos(math.pi * f))

    # warmup_stable_decay and one_minus_sqrt
    decay_v, decay_u = resolve(cfg.decay)
    if decay_v <= 0:
        return warm
    need_same_unit("t_decay", decay_u)
    if warm_u == max_unit and warm_v + decay_v > max_value:
        raise ValueError(f"scheduler.t_warmup ({cfg.t_warmup}) + t_decay ({cfg.t_decay}) exceed max_duration "
                         f"({max_value:g}{max_unit}); shorten one of them or lengthen the run")
    f = min(1.0, max(0.0, (now(decay_u, "t_decay") - (max_value - decay_v)) / decay_v))
    shape = 1.0 - (math.sqrt(f) if cfg.decay_shape == "one_minus_sqrt" else f)
    return min(warm, cfg.alpha_f + (1.0 - cfg.alpha_f) * shape)


def lr_multiplier_at(cfg: SchedulerConfig, t: TimeLike, max_duration: TimeLike) -> float:
    """The LR multiplier of `cfg` at time `t` of a run lasting `max_duration`, without a Composer State.

    Used by the dry-run schedule printer and the tests. `t` has a single unit, so every time of the
    schedule that is not 'dur' must be in that unit (a Composer State tracks all units at once and
    has no such limit).

    Args:
        cfg: the schedule.
        t: e.g. "1500000000tok" or Time(10, TimeUnit.BATCH).
        max_duration: the run length, e.g. "1719000000000tok"; not in 'dur'.
    """
    t_value, t_unit = _as_pair(t, "t")
    max_value, max_unit = _as_pair(max_duration, "max_duration")
    if max_unit == "dur":
        raise ValueError("max_duration must be absolute (tok, ba or sp), not 'dur'")
    if t_unit == "dur":
        t_value, t_unit = t_value * max_value, max_unit

    def now(unit: str, key: str) -> float:
        if unit != t_unit:
            raise ValueError(f"scheduler.{key} is in '{unit}' but t is in '{t_unit}'; lr_multiplier_at cannot convert "
                             f"between them: pass t in '{unit}'")
        return t_value

    return _multiplier(cfg, now, max_value, max_unit)


def _state_max_duration(state: State) -> tuple[float, str]:
    """state.max_duration as (value, unit); epochs become batches when the dataloader length is known."""
    md = state.max_duration
    if md is None:
        raise RuntimeError("state.max_duration must be set before the LR scheduler runs")
    if md.unit == TimeUnit.EPOCH:
        if state.dataloader_len is None:
            raise ValueError("max_duration is in epochs but the train dataloader has no length; give max_duration "
                             "in tok, ba or sp")
        return float(md.value * int(state.dataloader_len)), "ba"
    if md.unit.value not in _COMPOSER_UNIT or md.unit == TimeUnit.DURATION:
        raise ValueError(f"max_duration in '{md.unit.value}' is not supported by the LR schedule; use tok, ba or sp")
    return float(md.value), md.unit.value


class _ConfigScheduler(ComposerScheduler):
    """A Composer scheduler evaluating a SchedulerConfig against the trainer's State."""

    def __init__(self, cfg: SchedulerConfig):
        self.cfg = cfg

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        max_value, max_unit = _state_max_duration(state)

        def now(unit: str, key: str) -> float:
            return float(state.timestamp.get(_COMPOSER_UNIT[unit]).value)

        return _multiplier(self.cfg, now, max_value, max_unit, ssr)

    @classmethod
    def from_config(cls, cfg: SchedulerConfig) -> "_ConfigScheduler":
        """Wrap an already validated config, bypassing the keyword constructor."""
        scheduler = cls.__new__(cls)
        _ConfigScheduler.__init__(scheduler, cfg)
        return scheduler

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg})"


class WarmupStableDecayScheduler(_ConfigScheduler):
    """Linear warmup, constant, then a linear or 1-sqrt decay over the last `t_decay` (a trapezoid)."""

    def __init__(self, t_warmup: str = "3000000000tok", t_decay: str = "0tok",
                 decay_shape: str = "one_minus_sqrt", alpha_i: float = 0.0, alpha_f: float = 0.0):
        super().__init__(SchedulerConfig("warmup_stable_decay", t_warmup, t_decay, decay_shape, alpha_i, alpha_f))


class OneMinusSqrtScheduler(_ConfigScheduler):
    """1 - sqrt decay over the last `t_decay` of the run (default: the whole run), after an optional warmup."""

    def __init__(self, t_decay: str = "1dur", t_warmup: str = "0tok", alpha_i: float = 0.0, alpha_f: float = 0.0):
        super().__init__(SchedulerConfig("one_minus_sqrt", t_warmup, t_decay, "one_minus_sqrt", alpha_i, alpha_f))


class ConstantWithWarmupScheduler(_ConfigScheduler):
    """Linear warmup from `alpha_i` to 1, then constant."""

    def __init__(self, t_warmup: str = "3000000000tok", alpha_i: float = 0.0):
        super().__init__(SchedulerConfig("constant_with_warmup", t_warmup, None, "one_minus_sqrt", alpha_i, 0.0))


class CosineWithWarmupScheduler(_ConfigScheduler):
    """Linear warmup, then a cosine from 1 to `alpha_f` at max_duration (same unit as the warmup)."""

    def __init__(self, t_warmup: str = "3000000000tok", alpha_i: float = 0.0, alpha_f: float = 0.0):
        super().__init__(SchedulerConfig("cosine", t_warmup, None, "one_minus_sqrt", alpha_i, alpha_f))


def build_scheduler(cfg: SchedulerConfig) -> ComposerScheduler:
    """The Composer scheduler for `cfg` (one class per schedule name, for readable logs and reprs)."""
    classes = {"warmup_stable_decay": WarmupStableDecayScheduler, "one_minus_sqrt": OneMinusSqrtScheduler,
               "constant_with_warmup": ConstantWithWarmupScheduler, "cosine": CosineWithWarmupScheduler}
    return classes[cfg.name].from_config(cfg)
