"""A small, real, offline corpus of English prose and Python code for the quickstart.

Everything comes from files present wherever Python is installed:

* code: the standard library's ``.py`` files (tests and site-packages left out);
* prose: the language reference / library topics shipped as strings in
  ``pydoc_data/topics.py``, long module docstrings, and the long descriptions (README text)
  of installed packages that look like prose.

Selection is deterministic for a given machine (sorted, then a seeded shuffle) and capped
by size, so corpus -> tokenizer -> MDS takes well under two minutes on two cores.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import os
import random
import re
import shutil
import sysconfig
from pathlib import Path

from flexbert.data.convert import ConvertConfig, convert
from flexbert.data.tokenizer import train_tokenizer
from flexbert.outputs import atomic_write_json, check_output_dir, install_output_dir, prepare_output_dir

__all__ = ["collect_documents", "build_demo"]

log = logging.getLogger(__name__)

_SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_MAX_CODE_FILE = 256 * 1024  # generated tables (unicode data, topics.py itself) are not code worth learning
_MAX_PROSE_DOC = 32 * 1024  # cut very long READMEs/changelogs so no single package dominates
# A module docstring is the first statement: only blank lines and comments may precede it.
# ([ \t]* instead of \s* so the pattern cannot backtrack badly on long comment headers.)
_DOCSTRING = re.compile(r'\A(?:[ \t]*(?:#[^\n]*)?\r?\n)*[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.S)


def _looks_like_prose(text: str, min_chars: int) -> bool:
    """Long enough and mostly letters and spaces (rejects tables, changelog dumps, HTML)."""
    if len(text) < min_chars:
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters / len(text) >= 0.7


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_PARTS and not d.startswith("."))
        files += [Path(dirpath, n) for n in sorted(names) if n.endswith(".py")]
    return files


def _read_source(path: Path) -> str | None:
    try:
        if path.stat().st_size > _MAX_CODE_FILE:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:  # unreadable or not UTF-8: skip, never fail the demo
        log.debug("skipping %s: %s", path, e)
        return None


def _pydoc_topics() -> list[tuple[str, str]]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        log.warning("pydoc_data is not installed with this Python (some distributions strip it); "
                    "prose will come from module docstrings and package descriptions only")
        return []
    return [(f"pydoc_data.topics:{k}", v.strip()) for k, v in sorted(topics.items()) if _looks_like_prose(v, 200)]


def _package_descriptions() -> list[tuple[str, str]]:
    seen, out = set(), []
    try:
        dists = list(importlib.metadata.distributions())
    except Exception as e:  # a broken install must not break the demo
        log.warning("cannot list installed packages: %s", e)
        return []
    for dist in dists:
        try:
            meta = dist.metadata
            name = (meta.get("Name") or "").lower()
            if not name or name in seen or "html" in (meta.get("Description-Content-Type") or ""):
                continue
            seen.add(name)
            body = meta.get_payload() or inspect.cleandoc(meta.get("Description") or "")
        except Exception as e:
            log.debug("skipping metadata of %s: %s", dist, e)
            continue
        body = _cut(body.strip(), _MAX_PROSE_DOC)
        if isinstance(body, str) and _looks_like_prose(body, 500):
            out.append((f"metadata:{name}", body))
    return sorted(out)


def collect_documents(max_bytes: int, seed: int = 0) -> list[dict]:
    """Pick about `max_bytes` of documents, half prose and half code, as JSON-able records.

    Returns records ``{"text", "source": "prose"|"code", "origin"}`` in a seeded random
    order (so prose and code interleave in the shards).
    """
    rng = random.Random(seed)
    files = _stdlib_files()
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    code: list[tuple[str, str]] = []
    docstrings: list[tuple[str, str]] = []
    for f in files:
        text = _read_source(f)
        if text is None or not text.strip():
            continue
        rel = f.relative_to(stdlib).as_posix()
        code.append((f"stdlib:{rel}", text))
        m = _DOCSTRING.match(text)
        if m:
            doc = inspect.cleandoc(m.group(2))
            if _looks_like_prose(doc, 300):
                docstrings.append((f"docstring:{rel}", doc))
    prose = _pydoc_topics() + _package_descriptions() + docstrings
    rng.shuffle(prose)
    rng.shuffle(code)

    def take(items: list[tuple[str, str]], budget: int) -> list[tuple[str, str]]:
        out, used = [], 0
        for origin, text in items:
            size = len(text.encode("utf-8"))
            if used + size > budget and out:
                continue  # keep looking for smaller documents that still fit
            out.append((origin, text))
            used += size
        return out

    prose_budget = max_bytes // 2
    picked_prose = take(prose, prose_budget)
    used_prose = sum(len(t.encode("utf-8")) for _, t in picked_prose)
    picked_code = take(code, max_bytes - used_prose)  # code fills what prose could not
    records = [{"text": t, "source": "prose", "origin": o} for o, t in picked_prose]
    records += [{"text": t, "source": "code", "origin": o} for o, t in picked_code]
    rng.shuffle(records)
    if not records:
        raise RuntimeError(f"found no readable documents under {stdlib}; is this a complete Python install?")
    return records


def _renamed(obj, old: str, new: str):
    """Copy of a JSON-able object with path prefix `old` replaced by `new` in every string."""
    if isinstance(obj, str):
        return new + obj[len(old):] if obj.startswith(old) else obj
    if isinstance(obj, list):
        return [_renamed(v, old, new) for v in obj]
    if isinstance(obj, dict):
        return {k: _renamed(v, old, new) for k, v in obj.items()}
    return obj


def build_demo(
    output: str | os.PathLike,
    *,
    max_mb: float = 4.0,
    vocab_size: int = 4096,
    val_fraction: float = 0.05,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build OUTPUT/corpus/demo.jsonl, OUTPUT/tokenizer/ and OUTPUT/mds/{train,val}/.

    The whole folder is built under a temporary name and renamed when complete.
    Returns a summary dict (also saved as OUTPUT/summary.json).
    """
    out = check_output_dir(output, overwrite=overwrite)
    if max_mb <= 0:
        raise ValueError(f"--max-mb must be positive, got {max_mb}")
    tmp = prepare_output_dir(out, overwrite=overwrite)
    try:
        (tmp / "corpus").mkdir()
        records = collect_documents(int(max_mb * 1024 * 1024), seed)
        corpus = tmp / "corpus" / "demo.jsonl"
        with open(corpus, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        by_source: dict = {}
        for r in records:
            s = by_source.setdefault(r["source"], {"documents": 0, "bytes": 0})
            s["documents"] += 1
            s["bytes"] += len(r["text"].encode("utf-8"))
        log.info("demo corpus: %s", ", ".join(f"{k} {v['documents']} docs / {v['bytes'] / 1e6:.2f} MB" for k, v in sorted(by_source.items())))

        info = train_tokenizer((r["text"] for r in records), vocab_size, tmp / "tokenizer",
                               length=len(records), show_progress=progress)
        conv = convert(ConvertConfig(inputs=[str(corpus)], tokenizer=str(tmp / "tokenizer"), output=str(tmp / "mds"),
                                     val_fraction=val_fraction, workers=workers, progress=progress))
        summary = {
            "output": str(out),
            "corpus": by_source,
            "tokenizer": {"vocab_size": info.vocab_size},
            "mds": conv["splits"],
            "seed": seed,
            "max_mb": max_mb,
        }
        atomic_write_json(tmp / "summary.json", summary)
        # The nested summary names the temporary folder; point it at the final one.
        atomic_write_json(tmp / "mds" / "summary.json", _renamed(conv, str(tmp), str(out)))
        install_output_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
