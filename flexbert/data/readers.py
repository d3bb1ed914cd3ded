"""Read documents from local text, code, JSONL (.gz/.zst) and Parquet files.

Readers never raise on bad *content*: they yield a :class:`BadInput` record saying
``FILE:LINE: what is wrong`` and carry on where that makes sense, so the caller decides
(stop on the first problem, or skip and count it). :func:`iter_documents` applies that
policy. Every yielded item carries ``pos``, the bytes of the file consumed so far, which
drives a byte-accurate progress bar even for compressed inputs.

Inputs may also be objects in a bucket (``s3://``, ``gs://``; :class:`RemoteFile`, read
through pyarrow's file systems: flexbert/data/remote_files.py), and an
uncompressed JSONL file may be read as byte ranges (:class:`Piece`) that together yield
exactly the documents of the whole file: the Ray engine's unit of parallel work.

Formats are chosen by file suffix from the registry INPUT_FORMATS: a new format is one
``register_format(InputFormat(name, suffixes, read))`` with its reader (a generator of
Document / BadInput for one file), and folders, conversion and the Ray engine read it.
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
from typing import Callable, Iterable, Iterator, Sequence, Union

from flexbert.data.remote_files import RemoteFile, filesystem_for, is_url
from flexbert.registry import Registry

__all__ = [
    "Document",
    "BadInput",
    "InputError",
    "file_kind",
    "InputFormat",
    "INPUT_FORMATS",
    "register_format",
    "expand_inputs",
    "read_file",
    "iter_documents",
    "RemoteFile",
    "Piece",
    "is_url",
    "expand_any",
    "filesystem_for",
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
    """One document: its text and where it came from (line: JSONL line / Parquet row; None for a
    JSONL :class:`Piece` that starts inside its file, where counting the lines before it would
    mean reading them)."""

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


InputFile = Union[Path, RemoteFile]


@dataclass(frozen=True)
class Piece:
    """Part of an input file: the JSONL lines that *start* in bytes [start, stop) of an
    uncompressed file (stop None: to the end). The pieces of a file yield, in order, exactly
    the documents and problems of the whole file; only the piece at byte 0 reports an empty file."""

    file: InputFile
    start: int = 0
    stop: int | None = None

    def __str__(self) -> str:
        return f"{self.file}[{self.start}:{'' if self.stop is None else self.stop}]"


def _open_binary(path: InputFile, seekable: bool = False):
    if isinstance(path, RemoteFile):
        try:
            return path.open(seekable)
        except (OSError, ValueError) as e:
            raise OSError(f"{_one_line(e)}") from None
    return open(path, "rb")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


@dataclass(frozen=True)
class InputFormat:
    """A kind of input file, chosen by suffix.

    Attributes:
        name: the registry name ('jsonl', 'parquet', 'text', ...).
        suffixes: lower-case file suffixes of the format (".jsonl").
        read: (file, text_field) -> iterator of Document / BadInput for one whole file.
        compressed: also read FILE.SUFFIX.gz / .zst / .zstd (the reader decompresses).
    """

    name: str
    suffixes: frozenset[str]
    read: Callable[..., Iterator["Document | BadInput"]]
    compressed: bool = False


INPUT_FORMATS: Registry[InputFormat] = Registry("input format")


def register_format(fmt: InputFormat) -> InputFormat:
    """Add `fmt` to INPUT_FORMATS under its name (a suffix claimed twice is refused)."""
    for other in (INPUT_FORMATS.get(n) for n in INPUT_FORMATS.names()):
        shared = fmt.suffixes & other.suffixes
        if shared:
            raise ValueError(f"input format {fmt.name}: suffixes {sorted(shared)} are already {other.name}'s")
    return INPUT_FORMATS.register(fmt.name)(fmt)


def file_kind(path: Path) -> str | None:
    """The input format of `path` by its suffix ('jsonl', 'parquet', 'text', ...), or None (unknown)."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSED_SUFFIXES
    if compressed:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    for name in INPUT_FORMATS.names():
        fmt = INPUT_FORMATS.get(name)
        if last in fmt.suffixes and (fmt.compressed or not compressed):
            return name
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


def _walk_key(rel: str) -> tuple:
    """Sort key giving os.walk's order (sorted; a folder's files before its sub-folders)."""
    parts = rel.split("/")
    return tuple((0 if i == len(parts) - 1 else 1, name) for i, name in enumerate(parts))


def _list_remote(url: str, include: Sequence[str], exclude: Sequence[str]) -> list[RemoteFile]:
    """The files under an s3:// / gs:// URL, chosen and ordered exactly like expand_inputs does a folder."""
    import pyarrow.fs as pafs

    try:
        fs, root = filesystem_for(url)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            return [RemoteFile(url, info.size, info.mtime_ns)]
        if info.type == pafs.FileType.NotFound:
            raise InputError(BadInput(url, None, "unreadable", "no such file or folder in the bucket"))
        listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except InputError:
        raise
    except (OSError, ValueError) as e:  # credentials, endpoint, bucket: pyarrow raises OSError
        raise InputError(BadInput(url, None, "unreadable", f"cannot list: {_one_line(e)}; check the credentials "
                                  "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or gcloud's) and S3_ENDPOINT_URL")) from None
    base = url.rstrip("/")
    chosen, ignored = [], 0
    for fi in listing:
        if fi.type != pafs.FileType.File:
            continue
        rel = fi.path[len(root):].lstrip("/")
        parts = rel.split("/")
        if any(p in SKIP_DIRS or p.startswith(".") for p in parts[:-1]) or parts[-1].startswith("."):
            continue
        if exclude and _matches(rel, exclude, parts=True):
            continue
        if include:
            if not _matches(rel, include, parts=False):
                continue
        elif file_kind(Path(parts[-1])) is None:
            ignored += 1
            continue
        chosen.append((rel, fi))
    if ignored:
        log.info("%s: ignored %d files with unknown suffixes (use --include to add them)", url, ignored)
    chosen.sort(key=lambda x: _walk_key(x[0]))
    return [RemoteFile(f"{base}/{rel}", fi.size, fi.mtime_ns) for rel, fi in chosen]


def expand_any(paths: Iterable[str | os.PathLike], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[InputFile]:
    """:func:`expand_inputs` that also takes s3:// and gs:// URLs (files or prefixes), in the given order."""
    out: list[InputFile] = []
    seen: set = set()
    for p in paths:
        found = _list_remote(str(p), include, exclude) if is_url(str(p)) else expand_inputs([p], include, exclude)
        for f in found:
            key = f if isinstance(f, RemoteFile) else f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def read_file(path: InputFile | Piece, text_field: str = "text") -> Iterator[Document | BadInput]:
    """Yield the documents of one file (or :class:`Piece`), or BadInput records for what cannot be read."""
    if isinstance(path, Piece):
        if path.start == 0 and path.stop is None:
            path = path.file
        else:
            yield from _read_jsonl(path.file, text_field, path.start, path.stop)
            return
    yield from INPUT_FORMATS.get(file_kind(path) or "text").read(path, text_field)


def _read_text(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    f = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        yield BadInput(f, None, "unreadable", f"cannot read: {e.strerror or _one_line(e)}")
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


def _read_jsonl(path: InputFile, text_field: str, start: int = 0, stop: int | None = None) -> Iterator[Document | BadInput]:
    """JSONL records of `path`; with start/stop (uncompressed files only), those of the lines
    beginning in bytes [start, stop)."""
    f = str(path)
    ranged = start > 0 or stop is not None
    try:
        raw = _open_binary(path, seekable=start > 0)
    except OSError as e:
        yield BadInput(f, None, "unreadable", f"cannot read: {e.strerror or e}")
        return
    found = False
    lineno = 0
    first = 0  # where this piece's first line starts
    base: list[int] = []  # lines before it, counted only when a message needs a line number

    def line_no() -> int:
        if not base:
            base.append(_count_lines(path, first) if first > 0 else 0)
        return base[0] + lineno

    with raw:
        if start > 0:
            raw.seek(start - 1)
            if raw.read(1) != b"\n":
                raw.readline()  # the line that began before `start` belongs to the previous piece
            first = raw.tell()
        stream = raw if ranged else _open_lines(path, raw)
        while True:
            if stop is not None and raw.tell() >= stop:
                break
            try:
                line = stream.readline()
            except _decompress_errors() as e:
                lineno += 1
                yield BadInput(f, line_no(), "unreadable", f"corrupt or truncated data: {e}", raw.tell())
                return
            if not line:
                break
            lineno += 1
            pos = raw.tell()
            if not line.strip():
                continue  # blank lines separate nothing; they are not records
            found = True
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadInput(f, line_no(), "invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line", pos)
                continue
            try:
                record = json.loads(s)
            except json.JSONDecodeError as e:
                yield BadInput(f, line_no(), "malformed_json", f"malformed JSON: {e.msg} at column {e.colno}", pos)
                continue
            if not isinstance(record, dict):
                yield BadInput(f, line_no(), "malformed_json", f"expected a JSON object, got {type(record).__name__}", pos)
                continue
            if text_field not in record:
                fields = ", ".join(sorted(map(str, record))[:10]) or "none"
                yield BadInput(f, line_no(), "missing_field", f"no field '{text_field}' (fields: {fields}); set --text-field", pos)
                continue
            text = record[text_field]
            if not isinstance(text, str):
                yield BadInput(f, line_no(), "bad_field", f"field '{text_field}' is {type(text).__name__}, expected a string", pos)
                continue
            if not text.strip():
                yield BadInput(f, line_no(), "empty", f"field '{text_field}' is empty", pos)
                continue
            try:
                text.encode("utf-8")  # JSON escapes can smuggle in lone surrogates
            except UnicodeEncodeError:
                yield BadInput(f, line_no(), "invalid_utf8", "invalid UTF-8 (a lone surrogate \\ud8xx escape)", pos)
                continue
            yield Document(text, f, line_no() if start == 0 or base else None, pos)
        if not found and start == 0 and ranged:
            # The first piece alone decides "empty file": it looks past its end for any record.
            found = any(line.strip() for line in iter(raw.readline, b""))
    if not found and start == 0:
        yield BadInput(f, None, "empty", "empty file (no JSON records)", path.stat().st_size)


def _count_lines(path: InputFile, end: int) -> int:
    """Newlines in bytes [0, end) of an uncompressed file: the line number where a piece starts."""
    n = 0
    with _open_binary(path) as f:
        left = end
        while left > 0:
            chunk = f.read(min(left, 1 << 22))
            if not chunk:
                break
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def _read_parquet(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    import pyarrow as pa  # lazily: only Parquet inputs pay for pyarrow
    import pyarrow.parquet as pq

    f = str(path)
    try:
        pf = pq.ParquetFile(path.open_parquet_source() if isinstance(path, RemoteFile) else path)
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


register_format(InputFormat("text", frozenset(TEXT_SUFFIXES | CODE_SUFFIXES), _read_text))  # one document per file
register_format(InputFormat("jsonl", frozenset(JSONL_SUFFIXES), _read_jsonl, compressed=True))
register_format(InputFormat("parquet", frozenset({".parquet"}), _read_parquet))


def iter_documents(
    files: Sequence[InputFile | Piece],
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
