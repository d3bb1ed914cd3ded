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

Schedules are chosen by name from the registry SCHEDULES (``scheduler.name``). A schedule is one
registered subclass of ``ConfigScheduler`` that says what it requires of the config (``validate``),
its default ``t_decay`` and its curve (``multiplier``, given a ``Clock`` that reads times in
their own units); it is then a Composer scheduler, in the dry-run table and in preflight.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar, Union

from composer.core import State, Time, TimeUnit
from composer.optim import ComposerScheduler

from flexbert.config.optim import SchedulerConfig, parse_time
from flexbert.config.strict import ConfigError
from flexbert.registry import Registry

__all__ = [
    "SCHEDULES", "ConfigScheduler", "Clock", "WarmupStableDecayScheduler", "OneMinusSqrtScheduler",
    "ConstantWithWarmupScheduler", "CosineWithWarmupScheduler", "build_scheduler", "lr_multiplier_at",
    "schedule_class", "check_schedule_config",
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


@dataclasses.dataclass
class Clock:
    """The run's time as a schedule sees it: each config time read in its own unit.

    Attributes:
        now: current time in a unit; `key` names the config time needing it (for errors).
        max_value, max_unit: the run's max_duration.
        ssr: Composer's scale-schedule ratio, applied to absolute (non-dur) times.
    """

    now: Callable[[str, str], float]
    max_value: float
    max_unit: str
    ssr: float = 1.0

    def resolve(self, pair: tuple[float, str]) -> tuple[float, str]:
        """A config time as (value, unit): `dur` becomes max_duration's unit, absolute times are scaled by ssr."""
        value, unit = pair
        return (value * self.max_value, self.max_unit) if unit == "dur" else (value * self.ssr, unit)

    def need_same_unit(self, key: str, unit: str) -> None:
        if unit != self.max_unit:
            raise ValueError(
                f"scheduler.{key} is in '{unit}' but max_duration is in '{self.max_unit}'; the two cannot be converted "
                f"(tokens and samples per step vary with packing and batch-size warmup). Give {key} in "
                f"'{self.max_unit}' or 'dur', or max_duration in '{unit}'")

    def warmup(self, cfg: SchedulerConfig) -> float:
        """The linear warmup multiplier alpha_i -> 1 over t_warmup (1 after it, or without one)."""
        warm_v, warm_u = self.resolve(cfg.warmup)
        if warm_v <= 0:
            return 1.0
        return cfg.alpha_i + (1.0 - cfg.alpha_i) * min(1.0, max(0.0, self.now(warm_u, "t_warmup") / warm_v))


SCHEDULES: Registry[type["ConfigScheduler"]] = Registry("LR schedule")


class ConfigScheduler(ComposerScheduler):
    """A Composer scheduler evaluating a SchedulerConfig; subclasses register a schedule in SCHEDULES."""

    name: ClassVar[str]
    #: t_decay when the config leaves it null.
    default_t_decay: ClassVar[str] = "0tok"

    def __init__(self, cfg: SchedulerConfig):
        self.cfg = cfg

    @classmethod
    def validate(cls, cfg: SchedulerConfig) -> None:
        """Raise ValueError (naming the key) when `cfg` asks for what this schedule does not do."""

    @classmethod
    def t_decay(cls, cfg: SchedulerConfig) -> tuple[float, str]:
        return parse_time(cfg.t_decay if cfg.t_decay is not None else cls.default_t_decay, "scheduler.t_decay")

    @classmethod
    def multiplier(cls, cfg: SchedulerConfig, clock: Clock) -> float:
        """The LR multiplier at the clock's time."""
        raise NotImplementedError

    def __call__(self, state: State, ssr: float = 1.0) -> float:
        max_value, max_unit = _state_max_duration(state)

        def now(unit: str, key: str) -> float:
            return float(state.timestamp.get(_COMPOSER_UNIT[unit]).value)

        return self.multiplier(self.cfg, Clock(now, max_value, max_unit, ssr))

    @classmethod
    def from_config(cls, cfg: SchedulerConfig) -> "ConfigScheduler":
        """Wrap an already validated config, bypassing the keyword constructor."""
        scheduler = cls.__new__(cls)
        ConfigScheduler.__init__(scheduler, cfg)
        return scheduler

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cfg})"


def schedule_class(cfg: SchedulerConfig) -> type[ConfigScheduler]:
    """The registered schedule `cfg.name` names (ConfigError with the choices and the closest name)."""
    return SCHEDULES.get(cfg.name, "scheduler.name")


def check_schedule_config(cfg: SchedulerConfig) -> type[ConfigScheduler]:
    """Check `cfg` against its schedule: a known name and what that schedule requires (ConfigError)."""
    cls = schedule_class(cfg)
    try:
        cls.validate(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cls


def _multiplier(cfg: SchedulerConfig, now: Callable[[str, str], float], max_value: float, max_unit: str,
                ssr: float = 1.0) -> float:
    """The LR multiplier for `cfg` at the time given by `now(unit, key)` (see Clock)."""
    return check_schedule_config(cfg).multiplier(cfg, Clock(now, max_value, max_unit, ssr))


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


@SCHEDULES.register("warmup_stable_decay")
class WarmupStableDecayScheduler(ConfigScheduler):
    """Linear warmup, constant, then a linear or 1-sqrt decay over the last `t_decay` (a trapezoid)."""

    name = "warmup_stable_decay"

    def __init__(self, t_warmup: str = "3000000000tok", t_decay: str = "0tok",
                 decay_shape: str = "one_minus_sqrt", alpha_i: float = 0.0, alpha_f: float = 0.0):
        super().__init__(SchedulerConfig(self.name, t_warmup, t_decay, decay_shape, alpha_i, alpha_f))

    @classmethod
    def multiplier(cls, cfg: SchedulerConfig, clock: Clock) -> float:
        warm = clock.warmup(cfg)
        decay_v, decay_u = clock.resolve(cls.t_decay(cfg))
        if decay_v <= 0:
            return warm
        clock.need_same_unit("t_decay", decay_u)
        warm_v, warm_u = clock.resolve(cfg.warmup)
        if warm_u == clock.max_unit and warm_v + decay_v > clock.max_value:
            t_decay = cfg.t_decay if cfg.t_decay is not None else cls.default_t_decay
            raise ValueError(f"scheduler.t_warmup ({cfg.t_warmup}) + t_decay ({t_decay}) exceed max_duration "
                             f"({clock.max_value:g}{clock.max_unit}); shorten one of them or lengthen the run")
        f = min(1.0, max(0.0, (clock.now(decay_u, "t_decay") - (clock.max_value - decay_v)) / decay_v))
        shape = 1.0 - (math.sqrt(f) if cfg.decay_shape == "one_minus_sqrt" else f)
        return min(warm, cfg.alpha_f + (1.0 - cfg.alpha_f) * shape)


@SCHEDULES.register("one_minus_sqrt")
class OneMinusSqrtScheduler(WarmupStableDecayScheduler):
    """1 - sqrt decay over the last `t_decay` of the run (default: the whole run), after an optional warmup."""

    name = "one_minus_sqrt"
    default_t_decay = "1dur"

    def __init__(self, t_decay: str = "1dur", t_warmup: str = "0tok", alpha_i: float = 0.0, alpha_f: float = 0.0):
        ConfigScheduler.__init__(self, SchedulerConfig(self.name, t_warmup, t_decay, "one_minus_sqrt", alpha_i, alpha_f))

    @classmethod
    def validate(cls, cfg: SchedulerConfig) -> None:
        if cfg.decay_shape != "one_minus_sqrt":
            raise ValueError(f"scheduler.decay_shape = '{cfg.decay_shape}' contradicts name: one_minus_sqrt; "
                             f"use name: warmup_stable_decay for a {cfg.decay_shape} decay")
        if cls.t_decay(cfg)[0] == 0:
            raise ValueError("scheduler.t_decay is 0 with name: one_minus_sqrt, which only decays; "
                             "give the decay length, e.g. '1dur' for the whole run")


class _NoDecay(ConfigScheduler):
    """A schedule whose curve has no t_decay: a non-zero one is refused rather than ignored."""

    hint: ClassVar[str]

    @classmethod
    def validate(cls, cfg: SchedulerConfig) -> None:
        if cfg.t_decay is not None and parse_time(cfg.t_decay, "scheduler.t_decay")[0] != 0:
            raise ValueError(f"scheduler.t_decay = {cfg.t_decay!r} is not used by '{cls.name}' ({cls.hint}); "
                             f"remove it, or use name: warmup_stable_decay")


@SCHEDULES.register("constant_with_warmup")
class ConstantWithWarmupScheduler(_NoDecay):
    """Linear warmup from `alpha_i` to 1, then constant."""

    name = "constant_with_warmup"
    hint = "it never decays"

    def __init__(self, t_warmup: str = "3000000000tok", alpha_i: float = 0.0):
        super().__init__(SchedulerConfig(self.name, t_warmup, None, "one_minus_sqrt", alpha_i, 0.0))

    @classmethod
    def multiplier(cls, cfg: SchedulerConfig, clock: Clock) -> float:
        return clock.warmup(cfg)


@SCHEDULES.register("cosine")
class CosineWithWarmupScheduler(_NoDecay):
    """Linear warmup, then a cosine from 1 to `alpha_f` at max_duration (same unit as the warmup)."""

    name = "cosine"
    hint = "cosine decays from the end of warmup to max_duration"

    def __init__(self, t_warmup: str = "3000000000tok", alpha_i: float = 0.0, alpha_f: float = 0.0):
        super().__init__(SchedulerConfig(self.name, t_warmup, None, "one_minus_sqrt", alpha_i, alpha_f))

    @classmethod
    def multiplier(cls, cfg: SchedulerConfig, clock: Clock) -> float:
        warm_v, warm_u = clock.resolve(cfg.warmup)
        clock.need_same_unit("t_warmup", warm_u)  # the cosine starts where the warmup ends
        t = clock.now(clock.max_unit, "t_warmup")
        if t < warm_v:
            return clock.warmup(cfg)
        span = clock.max_value - warm_v
        f = 1.0 if span <= 0 else min(1.0, (t - warm_v) / span)
        return cfg.alpha_f + (1.0 - cfg.alpha_f) * 0.5 * (1.0 + math.cos(math.pi * f))


def build_scheduler(cfg: SchedulerConfig) -> ComposerScheduler:
    """The Composer scheduler of the schedule `cfg.name` (checked against its requirements)."""
    return check_schedule_config(cfg).from_config(cfg)
