"""Where the shipped YAML files are: a checkout's `yamls/`, or the copy an installed wheel carries.

pyproject.toml maps the package `flexbert.yamls` onto the top-level `yamls/` folder, so a wheel
holds the model presets, the demo, tiny and recipe configs as `flexbert/yamls/...` and an editable
install finds them through the same name. A plain checkout on `sys.path` (no install) has no
such package; there the folder beside `flexbert/` is used.

This module imports nothing from flexbert, so every layer can use it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["yamls_dir", "shipped_yaml", "checkout_root"]


def checkout_root() -> Path | None:
    """The repository root when flexbert runs from a checkout (train.py beside the package), else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "train.py").is_file() and (root / "yamls").is_dir() else None


def yamls_dir() -> Path:
    """The folder of shipped YAML files (models/, tiny/, demo.yaml, ...)."""
    spec = importlib.util.find_spec("flexbert.yamls")
    if spec is not None and spec.submodule_search_locations:
        # Installed (wheel or editable): a data-only package, so a namespace package with one folder.
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "yamls"


def shipped_yaml(relative: str) -> Path:
    """A shipped YAML file by its path under yamls/, e.g. "demo.yaml" or "models/tiny.yaml"."""
    return yamls_dir() / relative
