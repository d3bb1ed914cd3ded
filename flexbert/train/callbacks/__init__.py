"""FlexBERT's Composer callbacks, one per file, and a name -> class registry for configs.

Names: ``nan_guard`` (NaNGuard), ``throughput`` (ThroughputMFU), ``batch_stats`` (BatchStats),
``grad_norm`` (GradNorm), ``memory`` (Memory), ``hf_export`` (HFExport),
``release_grads`` (ReleaseGrads), ``long_context`` (LongContextProbes), ``progress`` (Progress: the
console's bar or compact lines; a LoggerDestination, which the builder passes as a logger).
``build_callback("grad_norm", {"interval": 10})`` builds one from a config mapping.
"""
from __future__ import annotations

from typing import Any, Mapping

from composer.core import Callback

from flexbert.registry import Registry
from flexbert.train.callbacks.batch_stats import BatchStats
from flexbert.train.callbacks.grad_norm import GradNorm, global_grad_norm
from flexbert.train.callbacks.hf_export import HFExport
from flexbert.train.callbacks.long_context import LongContextProbes
from flexbert.train.callbacks.memory import Memory
from flexbert.train.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from flexbert.train.callbacks.progress import Progress
from flexbert.train.callbacks.release_grads import ReleaseGrads
from flexbert.train.callbacks.throughput import ThroughputMFU

__all__ = ["CALLBACKS", "build_callback", "BatchStats", "GradNorm", "HFExport", "LongContextProbes", "Memory", "NaNGuard",
           "NonFiniteLossError", "Progress", "ReleaseGrads", "ThroughputMFU", "global_grad_norm"]

CALLBACKS: Registry[type[Callback]] = Registry("callback")
for _name, _cls in (("nan_guard", NaNGuard), ("throughput", ThroughputMFU), ("batch_stats", BatchStats),
                    ("grad_norm", GradNorm), ("memory", Memory), ("hf_export", HFExport),
                    ("release_grads", ReleaseGrads), ("long_context", LongContextProbes), ("progress", Progress)):
    CALLBACKS.register(_name)(_cls)


def build_callback(name: str, kwargs: Mapping[str, Any] | None = None, where: str | None = None) -> Callback:
    """Build the callback registered as `name` with keyword arguments from a config.

    Args:
        name: registry name, e.g. "grad_norm".
        kwargs: constructor arguments (None: defaults).
        where: config key path for error messages, e.g. "callbacks.grad_norm".
    """
    cls = CALLBACKS.get(name, where=where or "callbacks")
    try:
        return cls(**dict(kwargs or {}))
    except TypeError as e:  # an unknown or missing argument: say which callback and where
        raise ValueError(f"{where or 'callbacks.' + name}: {e}") from None
