"""Read documents from local text, code, JSONL (.gz/.zst) and Parquet files.

Readers never raise on bad *content*: they yield a :class:`BadInput` record saying
``FILE:LINE: what is wrong`` and carry on where that makes sense, so the caller decides
(stop on the first problem, or skip and count it). :func:`iter_documents` applies that
policy. Every yielded item carries ``pos``, the bytes of the file consumed so far, which
drives a byte-accurate progress bar even for compressed inputs.
"""
from __future__ import annotations

import fnmatch
import gzip
import io
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

__all__ = [
    "Document",
    "BadInput",
    "InputError",
    "file_kind",
    "expand_inputs",
    "read_file",
    "iter_documents",
]

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".tex", ".adoc", ".org"}
CODE_SUFFIXES = {
    ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".cu", ".cuh", ".java", ".kt", ".scala",
    ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".rb", ".php", ".sh", ".bash", ".zsh", ".sql", ".swift",
    ".m", ".mm", ".r", ".jl", ".lua", ".pl", ".hs", ".cs", ".fs", ".ml", ".ex", ".erl", ".clj", ".dart",
    ".html", ".css", ".scss", ".xml", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".cmake", ".mk", ".proto",
}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
COMPRESSED_SUFFIXES = {".gz", ".zst", ".zstd"}
# Directories never worth walking into (VCS metadata, caches, virtual envs).
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".tox", ".venv", "node_modules"}


@dataclass
class Document:
    """One document: its text and where it came from (line: JSONL line / Parquet row)."""

    text: str
    file: str
    line: int | None = None
    pos: int = 0


@dataclass
class BadInput:
    """A problem with the input; ``str()`` gives ``FILE:LINE: message`` (``FILE: message``)."""

    file: str
    line: int | None
    reason: str  # malformed_json | missing_field | bad_field | invalid_utf8 | empty | unreadable
    message: str
    pos: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class InputError(ValueError):
    """Raised for bad input when the policy is to stop; ``.bad`` holds the record."""

    def __init__(self, bad: BadInput):
        super().__init__(str(bad))
        self.bad = bad


def file_kind(path: Path) -> str | None:
    """'jsonl', 'parquet', 'text' (prose or code: one document per file) or None (unknown)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        return "jsonl" if len(suffixes) > 1 and suffixes[-2] in JSONL_SUFFIXES else None
    last = suffixes[-1] if suffixes else ""
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last == ".parquet":
        return "parquet"
    if last in TEXT_SUFFIXES or last in CODE_SUFFIXES:
        return "text"
    return None


def _matches(rel: str, patterns: Sequence[str], *, parts: bool) -> bool:
    """True when a glob matches the relative path, the file name, or (parts) a parent folder."""
    names = [rel, rel.rsplit("/", 1)[-1]]
    if parts:
        names += rel.split("/")[:-1]
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)


def expand_inputs(paths: Iterable[str | os.PathLike], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
    """Turn input paths into a sorted, de-duplicated file list.

    A file named explicitly is always used (unknown suffixes are read as text). A directory
    is walked (sorted, hidden/cache folders skipped): a file is kept when it matches an
    ``include`` glob (or, with no include globs, has a known suffix) and matches no
    ``exclude`` glob. Globs are matched against the path relative to the directory and
    the file name; exclude globs also match folder names (``--exclude tests``).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            ignored = 0

            def walk_error(e: OSError) -> None:  # os.walk would otherwise skip the folder silently
                raise InputError(BadInput(str(e.filename), None, "unreadable", f"cannot list folder: {e.strerror or e}"))

            for root, dirs, files in os.walk(p, onerror=walk_error):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                for name in sorted(files):
                    f = Path(root, name)
                    rel = f.relative_to(p).as_posix()
                    if name.startswith(".") or (exclude and _matches(rel, exclude, parts=True)):
                        continue
                    if include:
                        if not _matches(rel, include, parts=False):
                            continue
                    elif file_kind(f) is None:
                        ignored += 1
                        continue
                    out.append(f)
            if ignored:
                log.info("%s: ignored %d files with unknown suffixes (use --include to add them)", p, ignored)
        elif p.exists():
            raise InputError(BadInput(str(p), None, "unreadable", "not a regular file or directory"))
        else:
            raise InputError(BadInput(str(p), None, "unreadable", "no such file or directory"))
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def read_file(path: Path, text_field: str = "text") -> Iterator[Document | BadInput]:
    """Yield the documents of one file, or BadInput records for what cannot be read."""
    kind = file_kind(path) or "text"
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "text": _read_text}[kind]
    yield from reader(path, text_field)


def _read_text(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    f = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        yield BadInput(f, None, "unreadable", f"cannot read: {e.strerror or e}")
        return
    pos = len(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        yield BadInput(f, line, "invalid_utf8", f"invalid UTF-8 at byte {e.start} (is this a binary file?)", pos)
        return
    text = text.removeprefix("\ufeff")  # a BOM is an encoding artefact, not content
    if not text.strip():
        yield BadInput(f, None, "empty", "empty file", pos)
        return
    yield Document(text, f, None, pos)


def _open_lines(path: Path, raw: io.BufferedReader) -> io.BufferedIOBase:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if suffix in (".zst", ".zstd"):
        import zstandard  # imported lazily: only needed for .zst inputs

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


def _decompress_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def _read_jsonl(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    f = str(path)
    try:
        raw = open(path, "rb")
    except OSError as e:
        yield BadInput(f, None, "unreadable", f"cannot read: {e.strerror or e}")
        return
    found = False
    lineno = 0
    with raw:
        stream = _open_lines(path, raw)
        lines = iter(stream)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except _decompress_errors() as e:
                yield BadInput(f, lineno + 1, "unreadable", f"corrupt or truncated data: {e}", raw.tell())
                return
            lineno += 1
            pos = raw.tell()
            if not line.strip():
                continue  # blank lines separate nothing; they are not records
            found = True
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadInput(f, lineno, "invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line", pos)
                continue
            try:
                record = json.loads(s)
            except json.JSONDecodeError as e:
                yield BadInput(f, lineno, "malformed_json", f"malformed JSON: {e.msg} at column {e.colno}", pos)
                continue
            if not isinstance(record, dict):
                yield BadInput(f, lineno, "malformed_json", f"expected a JSON object, got {type(record).__name__}", pos)
                continue
            if text_field not in record:
                fields = ", ".join(sorted(map(str, record))[:10]) or "none"
                yield BadInput(f, lineno, "missing_field", f"no field '{text_field}' (fields: {fields}); set --text-field", pos)
                continue
            text = record[text_field]
            if not isinstance(text, str):
                yield BadInput(f, lineno, "bad_field", f"field '{text_field}' is {type(text).__name__}, expected a string", pos)
                continue
            if not text.strip():
                yield BadInput(f, lineno, "empty", f"field '{text_field}' is empty", pos)
                continue
            try:
                text.encode("utf-8")  # JSON escapes can smuggle in lone surrogates
            except UnicodeEncodeError:
                yield BadInput(f, lineno, "invalid_utf8", "invalid UTF-8 (a lone surrogate \\ud8xx escape)", pos)
                continue
            yield Document(text, f, lineno, pos)
    if not found:
        yield BadInput(f, None, "empty", "empty file (no JSON records)", path.stat().st_size)


def _read_parquet(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    import pyarrow as pa  # lazily: only Parquet inputs pay for pyarrow
    import pyarrow.parquet as pq

    f = str(path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        yield BadInput(f, None, "unreadable", f"not a readable Parquet file: {e}")
        return
    size = path.stat().st_size
    names = pf.schema_arrow.names
    if text_field not in names:
        yield BadInput(f, None, "missing_field", f"no column '{text_field}' (columns: {', '.join(names[:10])}); set --text-field", size)
        return
    col_type = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type)):
        yield BadInput(f, None, "bad_field", f"column '{text_field}' has type {col_type}, expected string", size)
        return
    total = max(pf.metadata.num_rows, 1)
    row = 0
    try:
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                row += 1
                pos = size * row // total
                if text is None:
                    yield BadInput(f, row, "missing_field", f"row {row}: column '{text_field}' is null", pos)
                elif not text.strip():
                    yield BadInput(f, row, "empty", f"row {row}: column '{text_field}' is empty", pos)
                else:
                    yield Document(text, f, row, pos)
    except (OSError, pa.ArrowException) as e:
        yield BadInput(f, row + 1, "unreadable", f"row {row + 1}: cannot read: {e}", size)
        return
    if row == 0:
        yield BadInput(f, None, "empty", "empty file (no rows)", size)


def iter_documents(
    files: Sequence[Path],
    text_field: str = "text",
    on_error: str = "fail",
    skipped: Counter | None = None,
    on_progress: Callable[[int], None] | None = None,
    max_logged: int = 20,
    examples: list[str] | None = None,
) -> Iterator[Document]:
    """Yield documents from `files`, applying the bad-input policy.

    Args:
        on_error: "fail" raises :class:`InputError` at the first problem; "skip" logs it
            (the first `max_logged`, also appended to `examples`) and counts it by reason
            in `skipped`.
        on_progress: called with the number of newly consumed bytes.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    skipped = Counter() if skipped is None else skipped
    for path in files:
        done = 0
        for item in read_file(path, text_field):
            if on_progress is not None and item.pos > done:
                on_progress(item.pos - done)
                done = item.pos
            if isinstance(item, BadInput):
                if on_error == "fail":
                    raise InputError(item)
                if sum(skipped.values()) < max_logged:
                    log.warning("skipped %s", item)
                    if examples is not None:
                        examples.append(str(item))
                skipped[item.reason] += 1
                continue
            yield item
