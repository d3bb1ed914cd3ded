"""Exact resume: the train loader's state (stream position, packer buffer, masking RNG,
batch-size warmup) and each rank's RNG travel inside Composer checkpoints.

How Composer 0.32 resumes data, and why FlexBERT does it differently:
  * Composer saves `state.dataset_state` only for a torch `DataLoader` whose `dataset` has
    `state_dict(num_samples, from_beginning)`, and then trusts `timestamp.sample_in_epoch`.
    FlexBERT's samples are *packed rows* built from a variable number of documents, so a
    row count cannot locate the stream position, and the packer's buffer would be lost.
  * Otherwise, with `spin_dataloaders=True`, Composer re-iterates the train loader and
    throws away `batch_in_epoch` batches: slow, and with the loader's own restored state it
    would skip those batches a second time.
  * Composer restores the RNG it saved only at the start of an epoch (or during spinning).
So the builder passes `spin_dataloaders=False` and the train loader is not a torch
DataLoader (Composer keeps `dataset_state` empty); this callback saves
`loader.state_dict()` plus the rank's python/numpy/torch RNG in the checkpoint (one entry
per rank, gathered to rank 0 which writes the file) and restores them before the first
batch of the resumed run: no batch is skipped, none is repeated.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

__all__ = ["LoaderState"]


def _local_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _load_local_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class LoaderState(Callback):
    """Saves and restores the train loader's iteration state (per rank) with each checkpoint.

    Args:
        loader: the train loader; needs `state_dict()` and `load_state_dict(state)`.
    """

    def __init__(self, loader: Any):
        self.loader = loader
        self._pending_rng: dict[str, Any] | None = None
        self.resumed = False

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank when a checkpoint is written (Composer builds the state dict
        # collectively); only rank 0 writes the file, so gather every rank's entry.
        mine = {"loader": self.loader.state_dict(), "rng": _local_rng_state()}
        return {"ranks": dist.all_gather_object(mine), "world_size": dist.get_world_size()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        world = dist.get_world_size()
        if state.get("world_size") != world:
            raise RuntimeError(
                f"this checkpoint was written by {state.get('world_size')} ranks and this run has {world}; "
                "exact data resume needs the same world size (use init_from to start a new phase instead)"
            )
        mine = state["ranks"][dist.get_global_rank()]
        self.loader.load_state_dict(mine["loader"])
        self._pending_rng = mine["rng"]
        self.resumed = True

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        # FIT_START comes after the checkpoint is loaded and after model/optimizer setup
        # consumed random numbers, immediately before the first batch is drawn.
        if event == Event.FIT_START and self._pending_rng is not None:
            _load_local_rng_state(self._pending_rng)
            self._pending_rng = None
