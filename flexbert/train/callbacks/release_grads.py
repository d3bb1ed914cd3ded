"""ReleaseGrads: drop the last step's gradients before evaluation runs.

Composer clears gradients at the start of the next training batch, so during an evaluation
that runs at a batch end the previous step's gradients are still attached. They are never
used again (the optimizer step is done), cost memory while eval activations are live, and
break `compile: true` under FSDP with bf16 mixed precision: when Dynamo traces the eval
forward it copies each parameter with its `.grad` to a fake tensor, and torch 2.11 refuses a
bf16 parameter view holding an fp32 gradient (seen on an H200; bench/results/train_throughput.md).
"""
from __future__ import annotations

from composer.core import Callback, State
from composer.loggers import Logger

__all__ = ["ReleaseGrads"]


class ReleaseGrads(Callback):
    """At EVAL_START, set every optimizer's gradients to None (`zero_grad(set_to_none=True)`)."""

    def eval_start(self, state: State, logger: Logger) -> None:
        for optimizer in state.optimizers or ():
            optimizer.zero_grad(set_to_none=True)
