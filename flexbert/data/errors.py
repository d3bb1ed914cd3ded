"""Errors of the data layer that command lines report as one line (kept import-light for train.py)."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """MDS data that cannot be used: a missing, truncated or corrupt shard, an unreadable index,
    a remote that cannot be read. The message is one line naming the file and what to do."""
