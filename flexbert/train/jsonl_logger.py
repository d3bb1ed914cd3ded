"""A Composer logger writing every metric at full precision as JSON lines.

The console logger rounds to 4 decimals; comparing a resumed run with an uninterrupted
one (to 1e-6), or plotting without wandb, needs the exact values. One line per
`log_metrics` call: `{"step": 12, "loss/train/total": 5.4321..., ...}`. Only rank 0 writes.
The file is opened in append mode, so an autoresumed run continues the same file.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import torch
from composer.core import State
from composer.loggers import Logger, LoggerDestination
from composer.utils import dist

__all__ = ["JsonlLogger", "read_jsonl_metrics"]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class JsonlLogger(LoggerDestination):
    """Append metrics to `path` (rank 0 only).

    Args:
        path: the .jsonl file; its folder is created.
    """

    def __init__(self, path: str):
        self.path = path
        self._file = None

    def init(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # line-buffered: survives a kill

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self._file is None:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")

    def close(self, state: State, logger: Logger) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl_metrics(path: str, name: str) -> dict[int, float]:
    """{step: value} of metric `name` in a JsonlLogger file (a later line for a step wins)."""
    out: dict[int, float] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if name in record and record.get("step") is not None:
                out[int(record["step"])] = record[name]
    return out
