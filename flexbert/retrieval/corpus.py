"""Raw Python sources for MLM pretraining ahead of a code-search evaluation, with held-out functions kept out.

A retrieval comparison is only fair if pretraining never saw the held-out (validation/test)
functions next to their docstrings. `collect_pretraining_texts` walks source folders and
drops every file that holds a held-out pair: a line equal to the first line of the pair's
document (its ``def`` line) *and* the pair's query (docstring summary line) somewhere in the
file. That catches vendored copies of standard-library modules in site-packages (pip,
setuptools and backports carry many) without dropping every file that merely defines
``__init__(self)``.

Files are visited in sha1 order of their relative path, a fixed shuffle, so a character
budget takes a spread of packages rather than the alphabetically first ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Iterable, Sequence

from flexbert.retrieval.dataset import DEFAULT_EXCLUDE, _python_files, _relative, split_of

__all__ = ["CorpusStats", "HeldOutFilter", "collect_pretraining_texts"]


@dataclasses.dataclass
class CorpusStats:
    files: int = 0
    characters: int = 0
    skipped_held_out: int = 0  # files holding a validation/test function with its docstring
    skipped_other_split: int = 0
    skipped_too_large: int = 0
    skipped_unreadable: int = 0

    def describe(self) -> str:
        return (f"{self.files} files, {self.characters:,} characters (skipped: {self.skipped_held_out} holding "
                f"held-out functions, {self.skipped_other_split} of other splits, {self.skipped_too_large} too "
                f"large, {self.skipped_unreadable} unreadable)")


class HeldOutFilter:
    """Says whether a source text contains any of the given pairs (def line + summary line)."""

    def __init__(self, pairs: Iterable[dict]):
        self._queries_by_def: dict[str, list[str]] = {}
        for p in pairs:
            def_line = p["document"].splitlines()[0].strip()
            self._queries_by_def.setdefault(def_line, []).append(p["query"])

    def __len__(self) -> int:
        return sum(map(len, self._queries_by_def.values()))

    def holds_any(self, text: str) -> bool:
        candidates = [q for line in text.splitlines() for q in self._queries_by_def.get(line.strip(), ())]
        if not candidates:
            return False
        flat = " ".join(text.split())  # summary lines are whitespace-collapsed
        return any(q in flat for q in candidates)


def collect_pretraining_texts(roots: Sequence[str | Path], held_out: HeldOutFilter, *, max_chars: int | None = None,
                              only_split: str | None = None, max_file_chars: int = 256_000,
                              exclude: Iterable[str] = DEFAULT_EXCLUDE) -> tuple[list[str], CorpusStats]:
    """Texts of the .py files under `roots`, held-out holders dropped, up to `max_chars` characters.

    `only_split` keeps the files whose path-hash split (`flexbert.retrieval.dataset.split_of`)
    is that split, e.g. "train" for the very source the code-search set was built from.
    Files over `max_file_chars` (generated tables, vendored bundles) are skipped.
    """
    files = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"pretraining source {root}: no such folder")
        files += [(_relative(f, root), f) for f in _python_files(root, exclude)]
    files.sort(key=lambda t: hashlib.sha1(t[0].encode("utf-8")).hexdigest())
    texts, stats = [], CorpusStats()
    for rel, f in files:
        if max_chars is not None and stats.characters >= max_chars:
            break
        if only_split is not None and split_of(rel) != only_split:
            stats.skipped_other_split += 1
            continue
        try:
            if f.stat().st_size > 4 * max_file_chars:
                stats.skipped_too_large += 1
                continue
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            stats.skipped_unreadable += 1
            continue
        if len(text) > max_file_chars:
            stats.skipped_too_large += 1
            continue
        if held_out.holds_any(text):
            stats.skipped_held_out += 1
            continue
        texts.append(text)
        stats.files += 1
        stats.characters += len(text)
    return texts, stats
