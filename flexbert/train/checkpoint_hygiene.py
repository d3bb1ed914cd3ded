"""Make autoresume safe after a crash in the middle of writing a checkpoint.

Composer writes `ep{E}-ba{B}-rank{R}.pt` in place and only afterwards points the
`latest-rank{R}.pt` symlink at it. A process killed in between leaves a file that looks
finished but may be truncated, and Composer then refuses to resume ("may conflict with a
future checkpoint"). The symlink is the commit point: any checkpoint newer than its target
is unconfirmed. Before resuming we rename those files to `<name>.unconfirmed` (nothing is
deleted), so the run resumes from the last confirmed checkpoint and rewrites the rest.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from flexbert.outputs import set_aside

__all__ = ["set_aside_unconfirmed_checkpoints"]

log = logging.getLogger(__name__)


def _batch_of(name: str, rank: int) -> int | None:
    found = re.fullmatch(rf"ep\d+-ba(\d+)-rank{rank}\.pt", name)
    return int(found.group(1)) if found else None


def set_aside_unconfirmed_checkpoints(folder: str | os.PathLike, rank: int) -> list[Path]:
    """Rename this rank's checkpoints newer than `latest-rank{rank}.pt`'s target; return the new paths.

    Args:
        folder: the run's save folder (may not exist yet).
        rank: global rank whose files (`...-rank{rank}.pt`) are checked.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    latest = folder / f"latest-rank{rank}.pt"
    confirmed = -1
    if latest.is_symlink() and latest.exists():
        confirmed = _batch_of(Path(os.readlink(latest)).name, rank)
        if confirmed is None:  # a symlink we do not understand: leave everything as it is
            return []
    moved = []
    for path in sorted(folder.iterdir()):
        batch = _batch_of(path.name, rank)
        if batch is None or path.is_symlink() or batch <= confirmed:
            continue
        target = set_aside(path, ".unconfirmed")
        moved.append(target)
        log.warning("checkpoint %s was never confirmed by %s (the run stopped while saving it); "
                    "moved it to %s and resuming from the last confirmed checkpoint", path, latest.name, target.name)
    return moved
