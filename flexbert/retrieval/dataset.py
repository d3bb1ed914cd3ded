"""Offline code-search pairs from local Python sources: docstring summary line -> function code.

For every function or method (``def`` / ``async def``, nested ones included) whose docstring
summary line (the first non-blank line of the cleaned docstring) has at least `min_words`
words, one pair is made:

* query: the summary line;
* document: the function's source from its ``def`` line to its last line (decorators left
  out), dedented, with its docstring removed, and with the docstrings of functions and
  classes nested inside it removed too (they would give the answer away). Signature and body
  are kept as written (comments included).

Functions without a docstring, with a short summary, with a docstring sharing a line with
code, or with nothing but a docstring as body are skipped (and counted). Identical documents
are kept once (the first by sorted path and line), across all splits.

The split is by file: ``sha1(relative path) % 100`` < 80 train, < 90 validation, else test,
so no file (and no function of it) feeds two splits, and a file's split does not change
when other files are added. Relative paths are taken from each source root and prefixed with
the root's folder name.

    python -m flexbert.retrieval.dataset --output data/retrieval/stdlib          # the standard library
    python -m flexbert.retrieval.dataset --source src/ other/ --output data/retrieval/mine

writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (one pair a line: ``id``, ``query``,
``document``, ``path``, ``name``, ``lineno``) and ``summary.json`` (counts).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import inspect
import json
import os
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from flexbert.outputs import atomic_file, atomic_write_json, atomic_write_text, check_output_dir

__all__ = ["Pair", "SPLITS", "DEFAULT_EXCLUDE", "summary_line", "extract_pairs", "split_of", "build_dataset",
           "read_split", "default_source"]

SPLITS = ("train", "validation", "test")
# Folder names skipped while walking (tests are mostly docstring-less or boilerplate "Test that ...").
DEFAULT_EXCLUDE = ("site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "lib2to3")
_FUNC = (ast.FunctionDef, ast.AsyncFunctionDef)
_DOC_OWNERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclasses.dataclass(frozen=True)
class Pair:
    query: str
    document: str
    path: str  # relative, posix, prefixed with the source root's name
    name: str  # qualified name inside the file (Class.method, outer.inner)
    lineno: int

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.path}:{self.lineno}:{self.name}".encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {"id": self.id, **dataclasses.asdict(self)}


def default_source() -> str:
    """The standard library folder of the running Python."""
    return sysconfig.get_paths()["stdlib"]


def summary_line(docstring: str) -> str:
    """First non-blank line of the cleaned docstring, whitespace collapsed ('' if none)."""
    for line in inspect.cleandoc(docstring).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def _docstring_node(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0]
    return None


def _alone_on_its_lines(expr: ast.Expr, lines: Sequence[str]) -> bool:
    """True if nothing but the docstring (and whitespace) is on its first and last lines."""
    first, last = lines[expr.lineno - 1], lines[expr.end_lineno - 1]
    return not first[:expr.col_offset].strip() and not last[expr.end_col_offset:].strip()


def _document(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: Sequence[str]) -> str | None:
    """The function's code with its own and its nested definitions' docstrings removed; None to skip."""
    drop: set[int] = set()
    for inner in ast.walk(node):
        if isinstance(inner, _DOC_OWNERS):
            doc = _docstring_node(inner)
            if doc is not None:
                if not _alone_on_its_lines(doc, lines):
                    return None  # e.g. `def f(): "doc"; return 1`: no clean line-based removal
                drop.update(range(doc.lineno, doc.end_lineno + 1))
    kept = [lines[i - 1] for i in range(node.lineno, node.end_lineno + 1) if i not in drop]
    code = textwrap.dedent("\n".join(kept)).strip("\n")
    own_doc = _docstring_node(node)
    if own_doc is not None and len(node.body) == 1:
        return None  # nothing but a docstring: no code to find
    return code if code.strip() else None


def extract_pairs(source: str, path: str, *, min_words: int = 4, stats: dict | None = None) -> list[Pair]:
    """Pairs from one file's text; `stats` (optional) counts skips by reason."""
    stats = stats if stats is not None else {}
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        stats["unparsable_files"] = stats.get("unparsable_files", 0) + 1
        return []
    lines = source.splitlines()
    pairs: list[Pair] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (*_FUNC, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                if isinstance(child, _FUNC):
                    _consider(child, qual)
                visit(child, qual + ".")
            else:
                visit(child, prefix)

    def _consider(fn: ast.FunctionDef | ast.AsyncFunctionDef, qual: str) -> None:
        stats["functions"] = stats.get("functions", 0) + 1
        doc = ast.get_docstring(fn, clean=False)
        if doc is None:
            stats["skipped_no_docstring"] = stats.get("skipped_no_docstring", 0) + 1
            return
        query = summary_line(doc)
        if len(query.split()) < min_words:
            stats["skipped_short_summary"] = stats.get("skipped_short_summary", 0) + 1
            return
        document = _document(fn, lines)
        if document is None:
            stats["skipped_no_code"] = stats.get("skipped_no_code", 0) + 1
            return
        pairs.append(Pair(query, document, path, qual, fn.lineno))

    visit(tree, "")
    return pairs


def split_of(path: str, fractions: tuple[int, int] = (80, 90)) -> str:
    """train / validation / test from the sha1 of the relative path (stable across machines)."""
    bucket = int(hashlib.sha1(path.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < fractions[0] else "validation" if bucket < fractions[1] else "test"


def _python_files(root: Path, exclude: Iterable[str]) -> Iterator[Path]:
    skip = set(exclude)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def _relative(file: Path, root: Path) -> str:
    return (Path(root.resolve().name) / file.resolve().relative_to(root.resolve())).as_posix()


def build_dataset(sources: Sequence[str | os.PathLike], *, min_words: int = 4,
                  exclude: Iterable[str] = DEFAULT_EXCLUDE) -> tuple[dict[str, list[Pair]], dict]:
    """Walk `sources` (folders or .py files) and return ({split: pairs}, summary counts)."""
    stats: dict = {"files": 0, "functions": 0, "skipped_no_docstring": 0, "skipped_short_summary": 0,
                   "skipped_no_code": 0, "unparsable_files": 0, "duplicate_documents": 0}
    files: list[tuple[str, Path]] = []
    for src in sources:
        root = Path(src)
        if root.is_file():
            files.append((root.name, root))
        elif root.is_dir():
            files.extend((_relative(f, root), f) for f in _python_files(root, exclude))
        else:
            raise FileNotFoundError(f"--source {root}: no such file or folder")
    files.sort(key=lambda t: t[0])
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    split_files: dict[str, set[str]] = {s: set() for s in SPLITS}
    for rel, f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            stats["unparsable_files"] += 1
            continue
        stats["files"] += 1
        split = split_of(rel)
        for pair in extract_pairs(text, rel, min_words=min_words, stats=stats):
            if pair.document in seen:
                stats["duplicate_documents"] += 1
                continue
            seen.add(pair.document)
            splits[split].append(pair)
            split_files[split].add(rel)
    summary = {**stats, "min_words": min_words, "sources": [str(s) for s in sources],
               "pairs": {s: len(v) for s, v in splits.items()},
               "files_with_pairs": {s: len(v) for s, v in split_files.items()}}
    return splits, summary


def write_dataset(splits: dict[str, list[Pair]], summary: dict, output: str | os.PathLike) -> Path:
    """OUTPUT/{train,validation,test}.jsonl and summary.json, each written atomically (flexbert.outputs)."""
    out = Path(output)
    for s in SPLITS:
        with atomic_file(out / f"{s}.jsonl") as f:
            f.writelines(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in splits[s])
    atomic_write_json(out / "summary.json", summary)
    return out


def read_split(folder: str | os.PathLike, split: str) -> list[dict]:
    """The records of `folder/split.jsonl` (FileNotFoundError naming the file if absent)."""
    path = Path(folder) / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; build it with python -m flexbert.retrieval.dataset")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flexbert.retrieval.dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", nargs="+", default=None, help="folders or .py files (default: the standard library)")
    p.add_argument("--output", required=True, help="folder for train/validation/test.jsonl + summary.json")
    p.add_argument("--min-words", type=int, default=4, help="minimum words in the summary line (default 4)")
    p.add_argument("--exclude", nargs="*", default=list(DEFAULT_EXCLUDE), help="folder names to skip")
    args = p.parse_args(argv)

    try:
        check_output_dir(args.output, inputs=[("--source", args.source)], replaces=False)
        splits, summary = build_dataset(args.source or [default_source()], min_words=args.min_words,
                                        exclude=args.exclude)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_dataset(splits, summary, args.output)
    print(json.dumps({"pairs": summary["pairs"], "files_with_pairs": summary["files_with_pairs"],
                      "duplicate_documents": summary["duplicate_documents"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
