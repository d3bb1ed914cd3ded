"""LongContextProbes: run the long-context probes (flexbert.long_context) when a training phase ends.

Config: ``callbacks: {long_context: {max_length: 8192, corpus: data/demo/mds/val, ...}}``; every
option of `flexbert.long_context.ProbeSettings` is accepted (same names as the CLI flags, with
underscores). Results go to ``<save_folder>/long_context/results.json`` and
``long_context.png`` (atomically) and to the loggers as ``long_context/<figure>`` (for example
``long_context/passkey/accuracy``), which is also what a sweep can rank by.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from flexbert.long_context.settings import ProbeSettings

__all__ = ["LongContextProbes"]

log = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _unwrap(model: Any) -> Any:
    """The FlexBertForMaskedLM inside Composer's wrappers (DDP -> ComposerModel -> .model)."""
    model = getattr(model, "module", model)
    return getattr(model, "model", model)


class LongContextProbes(Callback):
    """Probe the model at the end of fit on rank 0 (other ranks wait).

    Args:
        corpus: held-out data (an MDS split folder or text files); None: the run's held-out split
            from ``<save_folder>/config.yaml`` (eval_data / data.eval_split / data.eval_streams).
        tokenizer: tokenizer folder for a text corpus (None: the run's `tokenizer:`).
        text_field: JSONL / Parquet text column.
        max_heldout_tokens: read at most about this many held-out tokens.
        subfolder: results folder under the save folder.
        save_folder: overrides the folder found from the trainer's checkpoint saver.
        dtype: autocast dtype fp32 | bf16 | fp16 (None: bf16 for amp_bf16 runs, fp16 for amp_fp16, else fp32).
        log_prefix: prefix of the logged figures.
        plot: also write long_context.png.
        **settings: ProbeSettings fields (max_length, distances, passkey_lengths, seed, ...).
    """

    def __init__(self, corpus: Optional[str] = None, tokenizer: Optional[str] = None, text_field: str = "text",
                 max_heldout_tokens: Optional[int] = 2_000_000, subfolder: str = "long_context",
                 save_folder: Optional[str] = None, dtype: Optional[str] = None, log_prefix: str = "long_context",
                 plot: bool = True, **settings: Any):
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"callbacks.long_context.dtype {dtype!r}: choose fp32, bf16 or fp16")
        try:  # unknown or bad options fail when the run is built (an unknown one is a TypeError: named by the registry)
            self.settings = ProbeSettings(**settings)
        except ValueError as e:
            raise ValueError(f"callbacks.long_context: {e}") from None
        self.corpus, self.tokenizer, self.text_field = corpus, tokenizer, text_field
        self.max_heldout_tokens = max_heldout_tokens
        self.subfolder, self.save_folder, self.dtype = subfolder, save_folder, dtype
        self.log_prefix, self.plot = log_prefix, plot
        self._heldout = None
        self.results: Optional[dict[str, Any]] = None
        self.written: dict[str, str] = {}

    def _root(self, state: State) -> str:
        if self.save_folder is not None:
            return self.save_folder
        from composer.callbacks import CheckpointSaver
        from composer.utils import format_name_with_dist

        for cb in state.callbacks:
            if isinstance(cb, CheckpointSaver):
                return format_name_with_dist(cb.folder, state.run_name)
        return os.path.join(".", state.run_name)

    def _config_file(self, state: State) -> Optional[str]:
        path = os.path.join(self._root(state), "config.yaml")
        return path if os.path.isfile(path) else None

    def fit_start(self, state: State, logger: Logger) -> None:
        """Read the held-out data now, so a missing corpus fails before training, not after it."""
        if getattr(state, "fsdp_enabled", False):
            raise RuntimeError("callbacks.long_context does not support FSDP; run python -m flexbert.long_context "
                               "on the saved checkpoint instead")
        if dist.get_global_rank() != 0 or self._heldout is not None:
            return
        from flexbert.long_context.corpus import load_heldout  # import cost: only runs using this callback load it

        cfg = _unwrap(state.model).config
        self._heldout = load_heldout(self.corpus, special_ids={cfg.pad_token_id, cfg.cls_token_id, cfg.sep_token_id,
                                                               cfg.mask_token_id},
                                     vocab_size=cfg.vocab_size, config_file=self._config_file(state),
                                     tokenizer_dir=self.tokenizer or self._run_tokenizer(state),
                                     text_field=self.text_field, max_tokens=self.max_heldout_tokens)
        try:  # lengths that cannot fit fail now too, before the first step
            self.settings.resolve(cfg.max_position_embeddings)
        except ValueError as e:
            raise ValueError(f"callbacks.long_context: {e}") from None

    def _run_tokenizer(self, state: State) -> Optional[str]:
        config_file = self._config_file(state)
        if config_file is None:
            return None
        from omegaconf import OmegaConf

        return OmegaConf.load(config_file).get("tokenizer")

    def _autocast_dtype(self, state: State):
        import torch

        name = self.dtype
        if name is None:
            precision = str(getattr(state.precision, "value", state.precision))
            name = {"amp_bf16": "bf16", "amp_fp16": "fp16"}.get(precision, "fp32")
        return None if name == "fp32" else getattr(torch, _DTYPES[name])

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() == 0:
            from flexbert.long_context.runner import run_probes, special_ids_of, write_outputs  # import cost: only runs using this callback load it

            model = _unwrap(state.model)
            cfg = model.config
            device = next(model.parameters()).device
            results = run_probes(model, self._heldout, self.settings, special=special_ids_of(cfg),
                                 model_max_length=cfg.max_position_embeddings,
                                 local_window=None if cfg.global_attn_every_n_layers == 1 else cfg.local_attention // 2,
                                 device=device, dtype=self._autocast_dtype(state), progress=log.info)
            batch = int(state.timestamp.batch)
            results["source"] = {"kind": "training", "run_name": state.run_name, "batch": batch,
                                 "save_folder": self._root(state), "device": str(device)}
            out_dir = os.path.join(self._root(state), self.subfolder)
            self.written = write_outputs(results, out_dir, title=f"{state.run_name} at batch {batch}", plot=self.plot)
            logger.log_metrics({f"{self.log_prefix}/{k}": v for k, v in results["scores"].items()})
            self.results = results
            log.info("long-context probes: wrote %s", out_dir)
        dist.barrier()  # no rank exits before the results are written
