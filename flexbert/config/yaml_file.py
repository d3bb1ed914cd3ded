"""Reading one YAML config file (a run, a model preset): a missing file or a syntax error is one line.

PyYAML's own error is a multi-line traceback; `load_yaml_file` turns it into a `ConfigError`
naming the file, the line and the column (1-based, as editors count) and what the parser
found there, e.g. ``YAML syntax error in yamls/demo.yaml at line 4, column 9: mapping values
are not allowed here``.
"""
from __future__ import annotations

import os
from typing import Any

from flexbert.errors import ConfigError

__all__ = ["load_yaml_file", "read_yaml_mapping"]


def load_yaml_file(path: str | os.PathLike, what: str) -> Any:
    """The OmegaConf node of the YAML file at `path`; `what` names the file's role in errors ("run config")."""
    if not os.path.isfile(path):
        raise ConfigError(f"{what} file {path} does not exist")
    import yaml  # import cost: `from flexbert import FlexBertForMaskedLM` reads no file and skips these
    from omegaconf import OmegaConf  # import cost: as above
    from omegaconf.errors import OmegaConfBaseException  # import cost: as above

    try:
        return OmegaConf.load(path)
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_syntax_error(path, e)) from None
    except (yaml.YAMLError, OmegaConfBaseException, OSError, UnicodeDecodeError) as e:
        detail = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(f"cannot read {what} file {path}: {detail}") from None


def read_yaml_mapping(path: str | os.PathLike, what: str) -> Any:
    """`load_yaml_file` for a file that must hold a mapping at the top level (a run, a model file, a preset)."""
    from omegaconf import DictConfig  # import cost: as in load_yaml_file

    node = load_yaml_file(path, what)
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{what} file {path} must hold a mapping of keys at the top level, got {type(node).__name__}")
    return node


def _syntax_error(path: str | os.PathLike, e: Any) -> str:
    """One line from a yaml.MarkedYAMLError."""
    mark = e.problem_mark or e.context_mark
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = e.problem or e.context or "invalid YAML"
    context = f" ({e.context})" if e.context and e.problem else ""
    return f"YAML syntax error in {path}{at}: {what}{context}; fix the file there"
