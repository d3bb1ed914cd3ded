"""Reading the sweep's JSON markers (written by flexbert.outputs.atomic_write_json)."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["read_json"]


def read_json(path: str) -> Any:
    """Read a JSON marker file; an empty file (e.g. a DONE written by `touch`) reads as {}."""
    with open(path) as f:
        text = f.read()
    return json.loads(text) if text.strip() else {}
