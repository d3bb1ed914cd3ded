"""The words and numbers of a run's console progress: pure functions, no I/O, no clock.

`flexbert.train.callbacks.progress.Progress` measures; this module only formats, so the
format and the ETA arithmetic are tested on numbers alone. One snapshot gives both the
compact line written to log files and the text beside the terminal progress bar:

    step 200/2000 (10.0%) | loss 5.4321 | acc 0.1234 | 12.3k tok/s | elapsed 1m05s | ETA 9m45s
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

__all__ = ["ProgressSnapshot", "eta_seconds", "format_duration", "format_rate", "compact_line", "bar_text",
           "eval_line", "finish_line"]


@dataclasses.dataclass(frozen=True)
class ProgressSnapshot:
    """Where a run is; None where a value is not known yet (shown as '-').

    `total_steps` is known when `max_duration` is in batches; `fraction` is the share of
    `max_duration` done in its own unit (tokens, batches or rows).
    """

    step: int
    total_steps: Optional[int]
    fraction: float
    loss: Optional[float]
    accuracy: Optional[float]
    tokens_per_sec: Optional[float]
    elapsed_s: float
    eta_s: Optional[float]


def eta_seconds(fraction_at_start: float, fraction_now: float, seconds_since_start: float) -> Optional[float]:
    """Seconds left at the pace of this session: (1 - done) / (progress per second since it started).

    A resumed run starts at `fraction_at_start` > 0; its earlier sessions do not count towards the
    pace. None until some progress was made.
    """
    made = fraction_now - fraction_at_start
    if made <= 0 or seconds_since_start <= 0:
        return None
    return max(0.0, 1.0 - fraction_now) * seconds_since_start / made


def format_duration(seconds: Optional[float]) -> str:
    """42s, 4m05s, 2h03m, 3d04h; '-' for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_rate(tokens_per_sec: Optional[float]) -> str:
    """512 tok/s, 12.3k tok/s, 1.23M tok/s; '-' for None."""
    if tokens_per_sec is None:
        return "- tok/s"
    if tokens_per_sec >= 1e6:
        return f"{tokens_per_sec / 1e6:.2f}M tok/s"
    if tokens_per_sec >= 1e3:
        return f"{tokens_per_sec / 1e3:.1f}k tok/s"
    return f"{tokens_per_sec:.0f} tok/s"


def _value(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def _step(step: int, total: Optional[int]) -> str:
    return f"step {step}/{total}" if total is not None else f"step {step}"


def _metrics(s: ProgressSnapshot) -> list[str]:
    return [f"loss {_value(s.loss)}", f"acc {_value(s.accuracy)}", format_rate(s.tokens_per_sec)]


def compact_line(s: ProgressSnapshot) -> str:
    """The one line printed per console interval when the console is not a terminal."""
    head = f"{_step(s.step, s.total_steps)} ({100 * s.fraction:.1f}%)"
    return " | ".join([head, *_metrics(s), f"elapsed {format_duration(s.elapsed_s)}", f"ETA {format_duration(s.eta_s)}"])


def bar_text(s: ProgressSnapshot) -> str:
    """The text beside the terminal bar (the bar itself shows the percentage)."""
    return " | ".join([_step(s.step, s.total_steps), *_metrics(s),
                       f"{format_duration(s.elapsed_s)}<{format_duration(s.eta_s)}"])


def eval_line(step: int, total_steps: Optional[int], label: str, metrics: Mapping[str, float]) -> str:
    """One line per evaluation: its held-out loss and accuracy (`metrics` keyed by metric name)."""
    name = "eval" if label == "eval" else f"eval {label}"
    return (f"{name} at {_step(step, total_steps)}: loss {_value(metrics.get('MaskedLoss'))} | "
            f"acc {_value(metrics.get('MaskedAccuracy'))}")


def finish_line(step: int, total_steps: Optional[int], elapsed_s: float, tokens_per_sec: Optional[float]) -> str:
    """The last line of a fit."""
    return f"finished at {_step(step, total_steps)} in {format_duration(elapsed_s)} ({format_rate(tokens_per_sec)} on average)"
