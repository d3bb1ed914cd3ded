"""The error every layer raises for a wrong setting, and the spelling hint it carries.

`ConfigError` (a `ValueError`) means: the user wrote something wrong; the message is one line
naming the key, the file when known, and what to change. Entry points print it without a
traceback and exit with code 2. `closest` finds the valid name nearest to a misspelt one.

This module imports nothing from flexbert: it sits at the bottom of the layers
(docs/ARCHITECTURE.md, "Layers"), so the registry, the config and everything above may use it.
"""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["ConfigError", "closest"]


class ConfigError(ValueError):
    """A config value or key is wrong; the message says where and what to change."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """Return the closest spelling of `word` among `choices`, or None."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None
