"""NaNGuard: stop or skip a step whose loss (or gradient) is not finite, and stop a step that
blows up the weights before it can be checkpointed."""
from __future__ import annotations

import logging
from typing import Any

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

__all__ = ["NaNGuard", "NonFiniteLossError"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss or gradient; raised before the optimizer step of that batch."""


def _loss_tensors(loss: Any) -> list[torch.Tensor]:
    if isinstance(loss, torch.Tensor):
        return [loss]
    if isinstance(loss, dict):
        return [v for v in loss.values() if isinstance(v, torch.Tensor)]
    if isinstance(loss, (list, tuple)):
        return [v for v in loss if isinstance(v, torch.Tensor)]
    return []


def _param_rms(state: State) -> torch.Tensor:
    """RMS of every parameter tensor (local shards under FSDP), stacked on the parameters' device."""
    params = [p.to_local() if hasattr(p, "to_local") else p for p in state.model.parameters()]
    return torch.stack([torch.linalg.vector_norm(p.detach(), dtype=torch.float32).to(params[0].device)
                        / max(p.numel(), 1) ** 0.5 for p in params])


def _optimizer_state_bad(state: State) -> torch.Tensor:
    """True (a 0-dim tensor) when any floating optimizer-state tensor (Adam moments) is non-finite."""
    norms = []
    for optimizer in state.optimizers:
        for per_param in optimizer.state.values():
            for value in per_param.values():
                if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1:
                    local = value.to_local() if hasattr(value, "to_local") else value
                    norms.append(torch.linalg.vector_norm(local.detach(), dtype=torch.float32).reshape(1))
    if not norms:
        return torch.zeros((), dtype=torch.bool)
    return ~torch.isfinite(torch.cat([n.to(norms[0].device) for n in norms])).all()


class NaNGuard(Callback):
    """Check every batch's loss (and optionally gradients) for NaN/inf before the optimizer step.

    The decision is taken at ``AFTER_TRAIN_BATCH``: all microbatches have run backward (DDP
    gradients are reduced) and the optimizer has not stepped yet. A bad batch is detected on any
    rank and agreed on by all ranks (one all-reduce), so ranks never diverge.

    ``on_nan``:
      * ``stop``: raise NonFiniteLossError. The exception leaves ``fit`` before the optimizer step
        and before ``BATCH_CHECKPOINT``, so no checkpoint holds the bad step and the last saved
        checkpoint is the last good one. (``state.stop_training()`` would not do: Composer saves a
        checkpoint at the final batch of a run, which would then include the bad step.)
      * ``skip``: drop the gradients (set to None, so neither Adam's moments, the weights nor weight
        decay change), log ``nan_guard/skipped_steps``, and raise after ``max_consecutive_skips``
        bad batches in a row. The LR schedule and data position still advance.

    Args:
        on_nan: "stop" or "skip".
        max_consecutive_skips: with "skip", raise when this many batches in a row are bad.
        check_grads: also treat a non-finite gradient as bad (a finite loss can still overflow in
            backward; one norm per tensor per step). Not under amp_fp16, whose GradScaler already
            skips steps with inf gradients.
        check_params: after the optimizer step (``BATCH_END``, before ``BATCH_CHECKPOINT``), check
            that every parameter and optimizer-state tensor is finite and that no parameter's RMS
            grew by more than ``max_update_rms`` in the step. A finite loss and finite gradients
            can still give a catastrophic update (e.g. an LR of 1e6: weights of magnitude 1e6,
            finite, whose next forward is NaN); such a step is never saved, so the last checkpoint
            stays one training can continue from. With either ``on_nan`` this raises: the step is
            already applied and cannot be undone. Costs one norm per tensor before and after the step.
        max_update_rms: the largest growth of a parameter tensor's RMS in one step. By the triangle
            inequality the update's own RMS is at least the growth; StableAdamW's per-element
            update is bounded by the LR (~1e-3), so 1.0 only fires on a blow-up.
    """

    def __init__(self, on_nan: str = "stop", max_consecutive_skips: int = 5, check_grads: bool = True,
                 check_params: bool = True, max_update_rms: float = 1.0):
        if on_nan not in ("stop", "skip"):
            raise ValueError(f"NaNGuard on_nan is {on_nan!r}; choices: stop, skip")
        if max_consecutive_skips < 1:
            raise ValueError(f"NaNGuard max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        if not max_update_rms > 0:
            raise ValueError(f"NaNGuard max_update_rms must be > 0, got {max_update_rms}")
        self.on_nan = on_nan
        self.max_consecutive_skips = max_consecutive_skips
        self.check_grads = check_grads
        self.check_params = check_params
        self.max_update_rms = max_update_rms
        self._rms_before: torch.Tensor | None = None
        self.skipped_steps = 0
        self.consecutive = 0
        self._bad_loss: torch.Tensor | None = None

    def batch_start(self, state: State, logger: Logger) -> None:
        self._bad_loss = None

    def after_loss(self, state: State, logger: Logger) -> None:
        # Accumulate on the device without a host sync; the one sync happens per batch below.
        for loss in _loss_tensors(state.loss):
            bad = ~torch.isfinite(loss.detach()).all()
            self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad

    def _grads_bad(self, state: State) -> torch.Tensor | None:
        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        if not grads:
            return None
        local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]  # DTensor shards (FSDP2)
        norms = torch.stack([torch.linalg.vector_norm(g.detach(), dtype=torch.float32).to(local[0].device)
                             for g in local])
        return ~torch.isfinite(norms).all()

    def after_train_batch(self, state: State, logger: Logger) -> None:
        if self.check_params:
            self._rms_before = _param_rms(state)  # before the optimizer step; no host sync
        # Under fp16 loss scaling, inf gradients are expected now and then: the GradScaler skips
        # those steps itself and lowers the scale, so only the loss is checked there.
        grads = self.check_grads and "fp16" not in str(getattr(state.precision, "value", state.precision))
        flags = [f for f in (self._bad_loss, self._grads_bad(state) if grads else None) if f is not None]
        if not flags:
            return
        bad = torch.stack([f.reshape(()) for f in flags]).any().to(torch.int32).reshape(1)
        if dist.get_world_size() > 1:
            dist.all_reduce(bad, reduce_operation="MAX")
        if not bool(bad.item()):
            self.consecutive = 0
            return
        ts = state.timestamp
        where = f"batch {ts.batch.value} (token {ts.token.value}, sample {ts.sample.value})"
        what = "loss or gradient" if self.check_grads else "loss"
        if self.on_nan == "stop":
            raise NonFiniteLossError(
                f"non-finite {what} at {where}; stopped before the optimizer step, so the last saved checkpoint "
                f"is the last good state. Resume from it (e.g. with a lower LR), or set on_nan: skip")
        self.skipped_steps += 1
        self.consecutive += 1
        for optimizer in state.optimizers:
            optimizer.zero_grad(set_to_none=True)
        log.warning("NaNGuard: non-finite %s at %s; skipped the step (%d in a row, %d in total)",
                    what, where, self.consecutive, self.skipped_steps)
        logger.log_metrics({"nan_guard/skipped_steps": self.skipped_steps})
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite {what} in {self.consecutive} consecutive batches (last at {where}); giving up. Skipped "
                f"steps did not change the weights; resume from the last checkpoint with a lower LR or other data")

    def batch_end(self, state: State, logger: Logger) -> None:
        before, self._rms_before = self._rms_before, None
        if not self.check_params or before is None:
            return
        after = _param_rms(state)
        grew = after - before
        bad = (~torch.isfinite(after).all()) | (grew > self.max_update_rms).any() | _optimizer_state_bad(state)
        flag = bad.to(torch.int32).reshape(1)
        if dist.get_world_size() > 1:
            dist.all_reduce(flag, reduce_operation="MAX")
        if not bool(flag.item()):
            return
        names = [n for n, _ in state.model.named_parameters()]
        finite_growth = torch.where(torch.isfinite(grew), grew, torch.full_like(grew, float("inf")))
        worst = int(torch.argmax(finite_growth))
        ts = state.timestamp
        raise NonFiniteLossError(
            f"the optimizer step of batch {ts.batch.value} blew up the weights ({names[worst]}: RMS "
            f"{before[worst].item():.3g} -> {after[worst].item():.3g}; limit +{self.max_update_rms:g} per step, "
            f"callbacks.nan_guard.max_update_rms) or made weights or optimizer state non-finite. Stopped before "
            f"saving it, so the last saved checkpoint is the last good state: resume from it with a lower LR")

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive = int(state.get("consecutive", 0))
