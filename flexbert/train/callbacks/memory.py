"""Memory: CUDA memory (current and peak) on GPU, process RSS on CPU."""
from __future__ import annotations

import resource
import sys

import torch
from composer.core import Callback, State
from composer.loggers import Logger

__all__ = ["Memory"]

_GIB = 1024**3


def _rss_bytes() -> tuple[float, float]:
    """(current, peak) resident set size of this process in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    try:
        import psutil

        current = psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:  # Linux without psutil: pages
            current = int(f.read().split()[1]) * resource.getpagesize()
    # ru_maxrss is sampled by the kernel and can trail the current RSS by a page or so.
    return float(current), float(max(peak, current))


class Memory(Callback):
    """Log memory every `interval` batches, in GiB.

    On CUDA: ``memory/allocated_gib``, ``memory/peak_allocated_gib`` (since the start, or since
    the last log with `reset_peak`), ``memory/reserved_gib``, ``memory/peak_reserved_gib``. On CPU:
    ``memory/rss_gib`` and ``memory/peak_rss_gib``.

    Args:
        interval: log every this many batches.
        reset_peak: reset CUDA peak statistics after each log, so peaks are per interval.
    """

    def __init__(self, interval: int = 10, reset_peak: bool = False):
        if interval < 1:
            raise ValueError(f"Memory interval must be >= 1, got {interval}")
        self.interval = interval
        self.reset_peak = reset_peak

    @staticmethod
    def _cuda_device(state: State) -> torch.device | None:
        for p in state.model.parameters():
            return p.device if p.device.type == "cuda" else None
        return None

    def batch_end(self, state: State, logger: Logger) -> None:
        if state.timestamp.batch.value % self.interval != 0:  # counts finished batches here
            return
        device = self._cuda_device(state)
        if device is not None:
            logger.log_metrics({
                "memory/allocated_gib": torch.cuda.memory_allocated(device) / _GIB,
                "memory/peak_allocated_gib": torch.cuda.max_memory_allocated(device) / _GIB,
                "memory/reserved_gib": torch.cuda.memory_reserved(device) / _GIB,
                "memory/peak_reserved_gib": torch.cuda.max_memory_reserved(device) / _GIB,
            })
            if self.reset_peak:
                torch.cuda.reset_peak_memory_stats(device)
        else:
            current, peak = _rss_bytes()
            logger.log_metrics({"memory/rss_gib": current / _GIB, "memory/peak_rss_gib": peak / _GIB})
