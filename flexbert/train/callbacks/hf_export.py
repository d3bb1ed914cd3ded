"""HFExport: write a Hugging Face ModernBERT folder at the end of training (and optionally periodically)."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

__all__ = ["HFExport"]

log = logging.getLogger(__name__)


def _unwrap(model: Any) -> Any:
    """The FlexBERT model inside Composer's wrappers (DDP -> ComposerModel -> .model)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "model", model)  # the ComposerModel wrapper holds the torch model as .model


class HFExport(Callback):
    """Call ``flexbert.export.save_hf(model, out_dir, tokenizer=...)`` on rank 0.

    Folders: ``<save_folder>/<subfolder>/final`` at the end of fit, ``.../ep<N>`` every
    `every_n_epochs` epochs and ``.../ba<N>`` every `every_n_batches` batches. ``save_folder``
    defaults to the folder of the trainer's CheckpointSaver (formatted with the run name), else
    ``./<run_name>``. Under FSDP (1) all ranks gather the full weights to rank 0's CPU first (a
    collective); FSDP2 is not supported here: export the checkpoint with the export CLI.

    Args:
        subfolder: folder name under the save folder.
        tokenizer: passed to save_hf (a tokenizer object or a path), so the folder is complete.
        save_folder: overrides the folder found from the trainer.
        at_fit_end: export when fit ends.
        every_n_epochs / every_n_batches: also export periodically (None: never).
    """

    def __init__(self, subfolder: str = "hf", tokenizer: Any = None, save_folder: str | None = None,
                 at_fit_end: bool = True, every_n_epochs: int | None = None, every_n_batches: int | None = None):
        for key, value in (("every_n_epochs", every_n_epochs), ("every_n_batches", every_n_batches)):
            if value is not None and value < 1:
                raise ValueError(f"HFExport {key} must be >= 1 or None, got {value}")
        self.subfolder = subfolder
        self.tokenizer = tokenizer
        self.save_folder = save_folder
        self.at_fit_end = at_fit_end
        self.every_n_epochs = every_n_epochs
        self.every_n_batches = every_n_batches
        self.exported: list[str] = []

    def _root(self, state: State) -> str:
        if self.save_folder is not None:
            return self.save_folder
        from composer.callbacks import CheckpointSaver
        from composer.utils import format_name_with_dist

        for cb in state.callbacks:
            if isinstance(cb, CheckpointSaver):
                return format_name_with_dist(cb.folder, state.run_name)
        return os.path.join(".", state.run_name)

    def _gather_context(self, state: State):
        try:
            fsdp = state.fsdp_enabled
        except AttributeError:
            fsdp = False
        if not fsdp:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if not any(isinstance(m, FSDP) for m in state.model.modules()):
            raise RuntimeError("HFExport supports FSDP1 only; export the saved checkpoint with the export CLI")
        return FSDP.summon_full_params(state.model, writeback=False, rank0_only=True, offload_to_cpu=True)

    def export(self, state: State, name: str) -> str:
        """Export now to ``<root>/<subfolder>/<name>``; every rank must call it (FSDP gathers)."""
        out_dir = os.path.join(self._root(state), self.subfolder, name)
        with self._gather_context(state):
            if dist.get_global_rank() == 0:
                from flexbert.export import save_hf  # import cost: the model and export modules load only when an export runs

                os.makedirs(out_dir, exist_ok=True)
                save_hf(_unwrap(state.model), out_dir, tokenizer=self.tokenizer)
                log.info("HFExport: wrote %s", out_dir)
                self.exported.append(out_dir)
        dist.barrier()  # no rank moves on (or exits) before the folder is complete
        return out_dir

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if self.every_n_batches and state.timestamp.batch.value % self.every_n_batches == 0:
            self.export(state, f"ba{state.timestamp.batch.value}")

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        if self.every_n_epochs and state.timestamp.epoch.value % self.every_n_epochs == 0:
            self.export(state, f"ep{state.timestamp.epoch.value}")

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.at_fit_end:
            self.export(state, "final")
