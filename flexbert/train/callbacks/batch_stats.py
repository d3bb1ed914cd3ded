"""BatchStats: rows, tokens, documents and packing efficiency of each training batch."""
from __future__ import annotations

import numbers
from typing import Any, Mapping

import torch
from composer.core import Callback, State
from composer.loggers import Logger

__all__ = ["BatchStats"]


def _num(x: Any) -> float | None:
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return float(x.item())
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return float(x)
    return None


class BatchStats(Callback):
    """Log what the current (full, pre-microbatch) batch holds, every `interval` batches.

    Read from the packed batch dict when the keys are there (see docs/ARCHITECTURE.md):
    ``batch/rows`` (packing rows: ``len(row_offsets) - 1``, else the first dim of a 2-D
    ``input_ids``), ``batch/num_tokens`` (``num_tokens``, else the number of ``input_ids``),
    ``batch/num_docs`` (``len(cu_seqlens) - 1``), ``batch/max_doc_len`` (``max_seqlen``),
    ``batch/max_seq_len`` (the phase's row length) and ``batch/packing_efficiency`` =
    num_tokens / (rows x max_seq_len).

    The train dataloader may expose ``stats()`` returning a mapping of numbers (e.g.
    ``max_seq_len``, ``mlm_probability``, ``batch_size``); each is logged as ``batch/<key>``.
    ``mlm_probability`` is also read from a ``mlm_probability`` attribute of the dataloader or its
    ``collate_fn``.

    Args:
        interval: log every this many batches.
        max_seq_len: the row length, when neither the dataloader's stats() nor the batch give it.
    """

    def __init__(self, interval: int = 1, max_seq_len: int | None = None):
        if interval < 1:
            raise ValueError(f"BatchStats interval must be >= 1, got {interval}")
        self.interval = interval
        self.max_seq_len = max_seq_len

    @staticmethod
    def _loader_stats(state: State) -> dict[str, float]:
        loader = state.train_dataloader
        out: dict[str, float] = {}
        stats = getattr(loader, "stats", None)
        if callable(stats):
            values = stats()
            if isinstance(values, Mapping):
                out.update({k: v for k, v in ((str(k), _num(v)) for k, v in values.items()) if v is not None})
        if "mlm_probability" not in out:
            for owner in (loader, getattr(loader, "collate_fn", None)):
                p = _num(getattr(owner, "mlm_probability", None))
                if p is not None:
                    out["mlm_probability"] = p
                    break
        return out

    def after_dataloader(self, state: State, logger: Logger) -> None:
        if state.timestamp.batch.value % self.interval != 0:
            return
        metrics = {f"batch/{k}": v for k, v in self._loader_stats(state).items()}
        batch = state.batch
        if isinstance(batch, Mapping):
            ids = batch.get("input_ids")
            rows = None
            if batch.get("row_offsets") is not None:
                rows = len(batch["row_offsets"]) - 1
            elif isinstance(ids, torch.Tensor) and ids.dim() == 2:
                rows = ids.shape[0]
            tokens = _num(batch.get("num_tokens"))
            if tokens is None and isinstance(ids, torch.Tensor):
                tokens = float(ids.numel())
            if rows is not None:
                metrics["batch/rows"] = float(rows)
            if tokens is not None:
                metrics["batch/num_tokens"] = tokens
            if batch.get("cu_seqlens") is not None:
                metrics["batch/num_docs"] = float(len(batch["cu_seqlens"]) - 1)
            longest = _num(batch.get("max_seqlen"))
            if longest is not None:
                metrics["batch/max_doc_len"] = longest
            seq_len = metrics.get("batch/max_seq_len", self.max_seq_len)
            if seq_len is None and isinstance(ids, torch.Tensor) and ids.dim() == 2:
                seq_len = ids.shape[1]  # padded (B, S) batches: the row length is S
            if seq_len is not None:
                metrics["batch/max_seq_len"] = float(seq_len)
                if rows and tokens is not None:
                    metrics["batch/packing_efficiency"] = tokens / (rows * seq_len)
        if metrics:
            logger.log_metrics(metrics)
