"""ThroughputMFU: tokens/s, samples/s and model FLOPs utilisation over a window of batches."""
from __future__ import annotations

import collections
import logging

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from flexbert.train.flops import peak_flops as lookup_peak_flops

__all__ = ["ThroughputMFU"]

log = logging.getLogger(__name__)


class ThroughputMFU(Callback):
    """Log throughput over the last `window_size` batches, every batch once two points exist.

    Time and counts come from Composer's ``state.timestamp``: ``total_wct`` is training wall time
    (data loading included, evaluation excluded) and ``token`` / ``sample`` are summed over all
    ranks. ``token`` counts what the DataSpec's ``get_num_tokens_in_batch`` returns, which for
    FlexBERT's packed batches is ``num_tokens``: real tokens, no padding.

    Logged: ``throughput/tokens_per_sec`` and ``throughput/samples_per_sec`` (all ranks),
    ``throughput/device/tokens_per_sec`` (per rank), ``throughput/batches_per_sec`` and, when
    both FLOPs per token and the peak are known, ``throughput/mfu`` =
    tokens/s x flops_per_token / (peak_flops x world size).

    Args:
        window_size: batches averaged over.
        flops_per_token: training FLOPs per real token (``flexbert.train.flops.flops_per_token``);
            None: no MFU.
        peak_flops: one device's peak FLOP/s; None: looked up from the CUDA device name and
            the trainer's precision (None on CPU or an unknown GPU: no MFU).
    """

    def __init__(self, window_size: int = 10, flops_per_token: float | None = None, peak_flops: float | None = None):
        if window_size < 1:
            raise ValueError(f"ThroughputMFU window_size must be >= 1, got {window_size}")
        if peak_flops is not None and not peak_flops > 0:
            raise ValueError(f"ThroughputMFU peak_flops must be > 0 FLOP/s, got {peak_flops}")
        self.window_size = window_size
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        # (seconds, tokens, samples, batches) at the end of each batch; one more than the window.
        self._points: collections.deque = collections.deque(maxlen=window_size + 1)
        self._warned_tokens = False

    def _mark(self, state: State) -> None:
        ts = state.timestamp
        self._points.append((ts.total_wct.total_seconds(), ts.token.value, ts.sample.value, ts.batch.value))

    def fit_start(self, state: State, logger: Logger) -> None:
        self._points.clear()
        if self.peak_flops is None:
            self.peak_flops = lookup_peak_flops(None, state.precision)
        if self.flops_per_token is not None and self.peak_flops is None:
            log.info("ThroughputMFU: peak FLOP/s unknown for this device; MFU not logged (set peak_flops)")
        self._mark(state)  # the start point, so the first batch is measured too (also after a resume)

    def batch_end(self, state: State, logger: Logger) -> None:
        self._mark(state)
        if len(self._points) < 2:
            return
        t0, tok0, sp0, ba0 = self._points[0]
        t1, tok1, sp1, ba1 = self._points[-1]
        dt = t1 - t0
        if dt <= 0:
            return
        metrics = {"throughput/samples_per_sec": (sp1 - sp0) / dt, "throughput/batches_per_sec": (ba1 - ba0) / dt}
        tokens_per_sec = (tok1 - tok0) / dt
        if tok1 == tok0:
            if not self._warned_tokens:
                log.warning("ThroughputMFU: state.timestamp.token does not advance; the DataSpec needs "
                            "get_num_tokens_in_batch (returning the batch's num_tokens) for tokens/s and MFU")
                self._warned_tokens = True
        else:
            world = dist.get_world_size()
            metrics["throughput/tokens_per_sec"] = tokens_per_sec
            metrics["throughput/device/tokens_per_sec"] = tokens_per_sec / world
            if self.flops_per_token is not None and self.peak_flops is not None:
                metrics["throughput/mfu"] = tokens_per_sec * self.flops_per_token / (self.peak_flops * world)
        logger.log_metrics(metrics)
