"""Read one YAML file that must hold a mapping (a run file, a model file or a preset).

Every failure is a ConfigError naming the file: missing, not valid YAML (with the parser's line
and column), or not a mapping at the top level.
"""
from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from flexbert.config.strict import ConfigError

__all__ = ["read_yaml_mapping"]


def read_yaml_mapping(path: str | os.PathLike, what: str) -> DictConfig:
    """Load `path` as an OmegaConf mapping (interpolations unresolved); `what` names it in errors,
    e.g. "run config" or "model config"."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        node = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - yaml's ScannerError/ParserError and OmegaConf's own: say which file
        raise ConfigError(f"cannot read {what} file {path}: {' '.join(str(e).split())}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{what} file {path} must hold a mapping of keys at the top level, got {type(node).__name__}")
    return node
