"""Progress: what a person watching a run reads, instead of Composer's full metric dump.

On a terminal (the stream is a TTY): one progress bar for the run with step/total, loss, MLM
accuracy, real tokens/s and elapsed<ETA. Elsewhere (CI, log files, nohup): one compact line
per console interval, with no bar and no escape codes. Either way one line per evaluation
with its held-out loss and accuracy. Every metric still reaches the other loggers
(`loggers.jsonl` keeps them at full precision; `console_metrics: all` prints Composer's dump).

It is a LoggerDestination (so it receives the logged loss and accuracy) that the builder
passes to the Trainer's loggers; its text comes from `flexbert.train.progress_text`.
"""
from __future__ import annotations

import collections
import math
import sys
import time
from typing import Any, Callable, Optional, TextIO, Union

from composer.core import State, Time, TimeUnit
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

from flexbert.train.progress_text import (ProgressSnapshot, bar_text, compact_line, eta_seconds, eval_line,
                                          finish_line)

__all__ = ["Progress", "LOSS_KEY", "ACCURACY_KEY"]

LOSS_KEY = "loss/train/total"
ACCURACY_KEY = "metrics/train/MaskedAccuracy"
_BAR_STEPS = 1000  # the bar counts thousandths of max_duration, whatever its unit
_INTERVAL_UNITS = {TimeUnit.BATCH: "ba", TimeUnit.TOKEN: "tok", TimeUnit.SAMPLE: "sp"}


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _mean(values: collections.deque) -> Optional[float]:
    return math.fsum(values) / len(values) if values else None


class Progress(LoggerDestination):
    """A progress bar on a terminal, a compact line per `interval` elsewhere; rank 0 only.

    Args:
        bar: True: always the bar; False: always compact lines; "auto": the bar when `stream`
            is a terminal.
        interval: how often a compact line is written, a Composer time string (`200ba`,
            `1e6tok`); the first batch of a fit and the run's last one are always written.
        window: loss, accuracy and tokens/s are means over this many recent batches.
        metrics_file: the file holding every metric (named in the first line), or None.
        stream: where to write (None: sys.stderr when the fit starts).
        clock: seconds, monotonic; tests pass a fake one.
    """

    def __init__(self, bar: Union[bool, str] = "auto", interval: str = "10ba", window: int = 10,
                 metrics_file: Optional[str] = None, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic):
        if bar not in (True, False, "auto"):
            raise ValueError(f"Progress bar must be true, false or 'auto', got {bar!r}")
        if window < 1:
            raise ValueError(f"Progress window must be >= 1 batch, got {window}")
        self.interval = Time.from_timestring(str(interval))
        if self.interval.unit not in _INTERVAL_UNITS or self.interval.value <= 0:
            raise ValueError(f"Progress interval {interval!r} must be a positive number of ba, tok or sp")
        self.bar, self.window, self.metrics_file = bar, window, metrics_file
        self.stream, self.clock = stream, clock
        self._out: Optional[TextIO] = None
        self._bar: Any = None
        self._latest: dict[str, float] = {}
        self._eval: dict[str, dict[str, float]] = {}
        self._losses: collections.deque = collections.deque(maxlen=window)
        self._accuracies: collections.deque = collections.deque(maxlen=window)
        self._points: collections.deque = collections.deque(maxlen=window + 1)  # (training seconds, tokens)
        self._started = 0.0
        self._paused = 0.0  # seconds spent evaluating: not training, so not in tokens/s
        self._eval_began: Optional[float] = None
        self._fraction0 = 0.0
        self._tokens0 = 0
        self._bucket = -1
        self._last_written_step: Optional[int] = None

    # --- where the run is -------------------------------------------------------------------------
    @staticmethod
    def _total_steps(state: State) -> Optional[int]:
        md = state.max_duration
        return int(md.value) if md is not None and md.unit == TimeUnit.BATCH else None

    @staticmethod
    def _fraction(state: State) -> float:
        md = state.max_duration
        if md is None or md.value <= 0:
            return 0.0
        return min(1.0, state.timestamp.get(md.unit).value / md.value)

    def _training_seconds(self) -> float:
        return self.clock() - self._started - self._paused

    def _tokens_per_sec(self) -> Optional[float]:
        if len(self._points) < 2:
            return None
        (t0, tok0), (t1, tok1) = self._points[0], self._points[-1]
        return (tok1 - tok0) / (t1 - t0) if t1 > t0 and tok1 > tok0 else None

    def snapshot(self, state: State) -> ProgressSnapshot:
        """The run's progress now, from what this destination has seen since the fit started."""
        elapsed = self.clock() - self._started
        fraction = self._fraction(state)
        return ProgressSnapshot(step=int(state.timestamp.batch.value), total_steps=self._total_steps(state),
                                fraction=fraction, loss=_mean(self._losses), accuracy=_mean(self._accuracies),
                                tokens_per_sec=self._tokens_per_sec(), elapsed_s=elapsed,
                                eta_s=eta_seconds(self._fraction0, fraction, elapsed))

    # --- output -----------------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self._out)  # above the bar, which is drawn again below
        else:
            print(line, file=self._out, flush=True)

    def _use_bar(self) -> bool:
        if self.bar == "auto":
            return bool(getattr(self._out, "isatty", lambda: False)())
        return bool(self.bar)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- Composer events --------------------------------------------------------------------------
    def fit_start(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        self._out = self.stream if self.stream is not None else sys.stderr
        self._started, self._paused = self.clock(), 0.0
        self._fraction0, self._tokens0 = self._fraction(state), int(state.timestamp.token.value)
        self._points.clear()
        self._points.append((0.0, self._tokens0))
        self._bucket = int(state.timestamp.get(self.interval.unit).value // self.interval.value)
        self._last_written_step = None
        where = (f"every metric goes to {self.metrics_file}" if self.metrics_file
                 else "set loggers.jsonl to keep every metric in a file")
        self._write(f"training {state.run_name}: {where}; console_metrics: all prints them all here")
        if self._use_bar():
            from tqdm import tqdm

            self._bar = tqdm(total=_BAR_STEPS, initial=int(self._fraction0 * _BAR_STEPS), file=self._out,
                             dynamic_ncols=True, bar_format="{percentage:3.0f}%|{bar}| {desc}")

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        for key, value in metrics.items():
            if key in (LOSS_KEY, ACCURACY_KEY):
                self._latest[key] = _number(value)
            elif key.startswith("metrics/") and not key.startswith("metrics/train/"):
                _, label, name = key.split("/", 2)
                self._eval.setdefault(label, {})[name] = _number(value)

    def batch_end(self, state: State, logger: Logger) -> None:
        if self._out is None:
            return
        if LOSS_KEY in self._latest:
            self._losses.append(self._latest.pop(LOSS_KEY))
        if ACCURACY_KEY in self._latest:
            self._accuracies.append(self._latest.pop(ACCURACY_KEY))
        self._points.append((self._training_seconds(), int(state.timestamp.token.value)))
        snap = self.snapshot(state)
        if self._bar is not None:
            self._bar.set_description_str(bar_text(snap), refresh=False)
            self._bar.update(max(0, int(snap.fraction * _BAR_STEPS) - self._bar.n))
            return
        bucket = int(state.timestamp.get(self.interval.unit).value // self.interval.value)
        if self._last_written_step is None or bucket != self._bucket or snap.fraction >= 1.0:  # last: before its eval
            self._write(compact_line(snap))
            self._last_written_step = snap.step
        self._bucket = bucket

    def eval_start(self, state: State, logger: Logger) -> None:
        self._eval_began = self.clock()

    def eval_end(self, state: State, logger: Logger) -> None:
        if self._eval_began is not None:
            self._paused += self.clock() - self._eval_began
            self._eval_began = None
        metrics = self._eval.pop(state.dataloader_label, {})
        if dist.get_global_rank() != 0:
            return
        if self._out is None:  # an evaluation outside fit()
            self._out = self.stream if self.stream is not None else sys.stderr
        self._write(eval_line(int(state.timestamp.batch.value), self._total_steps(state), str(state.dataloader_label), metrics))

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._out is None:
            return
        snap = self.snapshot(state)
        if self._bar is None and self._last_written_step != snap.step:
            self._write(compact_line(snap))
        self._close_bar()
        seconds = self._training_seconds()
        tokens = int(state.timestamp.token.value) - self._tokens0
        self._write(finish_line(snap.step, snap.total_steps, snap.elapsed_s,
                                tokens / seconds if seconds > 0 and tokens > 0 else None))

    def close(self, state: State, logger: Logger) -> None:
        self._close_bar()
