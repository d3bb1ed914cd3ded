"""Load a run for training: the run config, its model config from wherever it comes, checked.

`flexbert.config.loading` reads a run and resolves a model section of presets and keys. A run
continuing from a Hugging Face folder (`init_from: {hf: DIR}`) takes its model config from the
folder's config.json instead (`flexbert.train.hf_init`, which reads it through the export
layer); config sits below both, so that choice is made here. The model's block names are then
checked against the model registries, so a misspelt `model.norm` is one config error naming the
key, the file and the closest name before any data is read.
"""
from __future__ import annotations

from typing import Iterable

from flexbert.config.loading import LoadedRun, assemble_run, hf_init_folder, read_run
from flexbert.config.model import load_model_config
from flexbert.model.registries import check_block_names
from flexbert.train.hf_init import hf_model_config

__all__ = ["load_run"]


def load_run(path: str, overrides: Iterable[str] = ()) -> LoadedRun:
    """Load, merge and validate a run (any run); raises ConfigError naming the key, file and fix."""
    sections = read_run(path, overrides)
    folder = hf_init_folder(sections.cfg)
    if folder is None:
        loaded = assemble_run(sections, lambda: load_model_config(sections.model_section))
    else:
        loaded = assemble_run(sections, lambda: hf_model_config(folder, sections.model_section, sections.cfg.tokenizer))
    check_block_names(loaded.model_cfg, loaded.source)
    return loaded
