"""Small file helpers shared by the sweep modules: JSON markers (written atomically, flexbert.outputs)."""
from __future__ import annotations

import json
from typing import Any

from flexbert.outputs import atomic_write_text

__all__ = ["write_json", "read_json"]


def write_json(path: str, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str) -> Any:
    """Read a JSON marker file; an empty file (e.g. a DONE written by `touch`) reads as {}."""
    with open(path) as f:
        text = f.read()
    return json.loads(text) if text.strip() else {}
