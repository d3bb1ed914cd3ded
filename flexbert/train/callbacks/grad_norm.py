"""GradNorm: the global gradient L2 norm, correct for single-process, DDP and FSDP training."""
from __future__ import annotations

import torch
from composer.core import Callback, State
from torch.distributed.fsdp import FullyShardedDataParallel
from composer.loggers import Logger
from composer.utils import dist

__all__ = ["GradNorm", "global_grad_norm"]


def _is_fsdp(state: State) -> bool:
    try:
        if state.fsdp_enabled:
            return True
    except AttributeError:  # a State without the property (older Composer) or a bare module
        pass
    return any(isinstance(m, FullyShardedDataParallel) for m in state.model.modules())


def global_grad_norm(parameters, sharded: bool) -> torch.Tensor | None:
    """L2 norm over all gradients of `parameters` (float32, 0-dim), or None when there are none.

    Args:
        parameters: the model's parameters.
        sharded: grads are disjoint shards (FSDP): sum the local squared norms over ranks, then
            take the root. Otherwise grads are already full and identical on every rank (DDP
            all-reduces them in backward), so the local norm is the global one.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads and not sharded:
        return None
    # DTensor grads (FSDP2) hold the local shard; FSDP1 flat-param grads are plain local shards.
    local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
    device = local[0].device if local else torch.device("cpu")
    sq = torch.zeros((), dtype=torch.float32, device=device)
    for g in local:
        sq = sq + torch.linalg.vector_norm(g.detach(), dtype=torch.float32).to(device) ** 2
    if sharded and dist.get_world_size() > 1:
        # Every rank must join, even one whose shard has no gradient.
        sq = sq.reshape(1)
        dist.all_reduce(sq, reduce_operation="SUM")
        sq = sq.reshape(())
    return sq.sqrt()


class GradNorm(Callback):
    """Log ``grad_norm``, the global L2 norm of all gradients, every `interval` batches.

    Measured at ``AFTER_TRAIN_BATCH``: after all microbatches' backward (and the DDP reduction,
    and AMP unscaling), before the optimizer step -- the gradient the optimizer sees. All groups
    are included (a single global norm, not the last group's). Under FSDP with hybrid sharding
    (replicas across nodes) the sum over all ranks counts each shard once per replica; the
    reported norm is then sqrt(replicas) too large.

    Args:
        interval: log every this many batches (1 = every batch). Each log costs a host sync.
    """

    def __init__(self, interval: int = 1):
        if interval < 1:
            raise ValueError(f"GradNorm interval must be >= 1, got {interval}")
        self.interval = interval

    def after_train_batch(self, state: State, logger: Logger) -> None:
        # timestamp.batch counts finished batches: this is batch number timestamp.batch (0-based).
        if state.timestamp.batch.value % self.interval != 0:
            return
        norm = global_grad_norm(state.model.parameters(), sharded=_is_fsdp(state))
        if norm is not None:
            logger.log_metrics({"grad_norm": norm.item()})
