"""Convert local text / code / JSONL / Parquet into pre-tokenized MDS shards.

Pipeline: the main process reads documents (cheap, sequential, so errors are reported in
input order), groups them into batches, and hands the batches to N tokenizer processes;
results come back *in submission order* and one ``MDSWriter`` per split writes them. So
the output is byte-identical whatever ``workers`` is, and no shard merging is needed.

Sample format (docs/ARCHITECTURE.md): column ``input_ids``, a 1-D ``ndarray`` of uint16
(vocab <= 65536) or uint32, wrapped ``[CLS] ... [SEP]``. We encode without special tokens
and wrap with the ids found by name, which is exactly what the TemplateProcessing
post-processor of our tokenizers produces, and also holds for a user's tokenizer whose
post-processor does something else. With ``chunk_len`` a long document becomes several
samples, each wrapped.

The train/val split is a hash of the document text, so it is deterministic and duplicate
documents always land in the same split (no train/val leakage through copies).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from flexbert.data.readers import BadInput, Document, InputError, expand_inputs, iter_documents
from flexbert.data.tokenizer import TokenizerInfo, load_tokenizer
from flexbert.outputs import atomic_write_json, check_output_dir, install_output_dir, prepare_output_dir

__all__ = [
    "ConvertConfig", "convert", "is_validation", "format_summary", "encode_documents", "SHARD_HASHES",
    "SampleWriter", "open_writers", "split_names",
]

log = logging.getLogger(__name__)


@dataclass
class ConvertConfig:
    """Options of one conversion run (the CLI flags of data_prep/convert_to_mds.py)."""

    inputs: Sequence[str]
    tokenizer: str
    output: str
    text_field: str = "text"
    on_error: str = "fail"  # fail | skip
    overwrite: bool = False
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    val_fraction: float = 0.0
    compression: str = "zstd"  # zstd | none
    workers: int = 1
    chunk_len: int | None = None
    min_tokens: int = 0
    progress: bool = True
    batch_docs: int = 256  # documents per task sent to a worker
    batch_chars: int = 1 << 18  # ... or fewer when long: bounds memory and balances workers
    shard_size: int = 1 << 26

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("no inputs given; pass --input PATH [PATH ...]")
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"--on-error must be 'fail' or 'skip', got {self.on_error!r}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.compression not in ("zstd", "none"):
            raise ValueError(f"--compression must be 'zstd' or 'none', got {self.compression!r}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.chunk_len is not None and self.chunk_len < 3:
            raise ValueError(f"--chunk-len must be at least 3 ([CLS] + 1 token + [SEP]), got {self.chunk_len}")
        if self.min_tokens < 0:
            raise ValueError(f"--min-tokens must be >= 0, got {self.min_tokens}")


def is_validation(text: str, val_fraction: float) -> bool:
    """Deterministic split: True when the text's 64-bit blake2b hash falls in the val fraction."""
    if val_fraction <= 0.0:
        return False
    if val_fraction >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return h < val_fraction * 2.0**64


def encode_documents(info: TokenizerInfo, texts: list[str], val_fraction: float) -> tuple[list[np.ndarray], list[bool]]:
    """Tokenize `texts` into wrapped id arrays of the MDS dtype, plus each one's split."""
    dtype = np.dtype(info.token_dtype)
    arrays = []
    for enc in info.tokenizer.encode_batch(texts, add_special_tokens=False):
        ids = enc.ids
        a = np.empty(len(ids) + 2, dtype=dtype)
        a[0], a[-1] = info.cls_id, info.sep_id
        a[1:-1] = ids
        arrays.append(a)
    return arrays, [is_validation(t, val_fraction) for t in texts]


# --- worker processes -------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(tokenizer_path: str, val_fraction: float) -> None:
    # N single-threaded processes on N cores; tokenizers' own thread pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER["info"] = load_tokenizer(tokenizer_path)
    _WORKER["val_fraction"] = val_fraction


def _encode_in_worker(texts: list[str]) -> tuple[list[np.ndarray], list[bool]]:
    return encode_documents(_WORKER["info"], texts, _WORKER["val_fraction"])


def _batched(docs: Iterable[Document], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for d in docs:
        batch.append(d.text)
        chars += len(d.text)
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _encoded(batches: Iterable[list[str]], info: TokenizerInfo, cfg: ConvertConfig) -> Iterator[tuple[list[np.ndarray], list[bool]]]:
    """Encode batches in order; with workers > 1 in a spawn pool with bounded look-ahead."""
    if cfg.workers == 1:
        for texts in batches:
            yield encode_documents(info, texts, cfg.val_fraction)
        return
    # spawn, not fork: forking a process whose tokenizers/tqdm threads may be running can deadlock.
    pool = mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker, initargs=(info.path, cfg.val_fraction))
    try:
        pending: deque = deque()
        for texts in batches:
            pending.append(pool.apply_async(_encode_in_worker, (texts,)))
            if len(pending) >= 2 * cfg.workers:  # bounded: never read the whole corpus ahead
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()


# --- statistics ---------------------------------------------------------------------------
@dataclass
class _SplitStats:
    """Counts of one split; sample lengths as an exact histogram, so parts merge exactly."""

    documents: int = 0
    chunked_documents: int = 0
    lengths: Counter = field(default_factory=Counter)  # sample length -> number of samples

    def merge(self, other: "_SplitStats") -> None:
        self.documents += other.documents
        self.chunked_documents += other.chunked_documents
        self.lengths.update(other.lengths)

    def to_json(self) -> dict:
        return {"documents": self.documents, "chunked_documents": self.chunked_documents,
                "lengths": [[int(k), int(v)] for k, v in sorted(self.lengths.items())]}

    @classmethod
    def from_json(cls, d: dict) -> "_SplitStats":
        return cls(d["documents"], d["chunked_documents"], Counter({int(k): int(v) for k, v in d["lengths"]}))

    def summary(self) -> dict:
        values = np.array(sorted(self.lengths), dtype=np.int64)
        counts = np.array([self.lengths[v] for v in values], dtype=np.int64)
        n = int(counts.sum())
        pct = {}
        if n:
            cum = np.cumsum(counts)
            for q in (50, 90, 99):
                # exactly np.percentile(all_lengths, q, method="nearest"), from the histogram
                idx = int(np.around((n - 1) * (np.float64(q) / 100)))
                pct[f"p{q}"] = int(values[np.searchsorted(cum, idx, side="right")])
            pct["max"] = int(values[-1])
            pct["mean"] = round(float(int((values * counts).sum())) / n, 1)
        return {
            "documents": self.documents,
            "samples": n,
            "chunked_documents": self.chunked_documents,
            "tokens": int((values * counts).sum()),
            "sample_length": pct,
        }


def _chunks(ids: np.ndarray, chunk_len: int | None) -> list[np.ndarray]:
    """Split a wrapped [CLS] x [SEP] array into wrapped pieces of at most chunk_len ids."""
    if chunk_len is None or len(ids) <= chunk_len:
        return [ids]
    cls, sep, body = ids[0], ids[-1], ids[1:-1]
    step = chunk_len - 2
    out = []
    for start in range(0, len(body), step):
        piece = np.empty(min(step, len(body) - start) + 2, dtype=ids.dtype)
        piece[0], piece[-1] = cls, sep
        piece[1:-1] = body[start : start + step]
        out.append(piece)
    return out


# --- shared by both engines: what a split's samples are and where they go ------------------
SHARD_HASHES = ("sha1", "xxh64")  # recorded per shard in index.json; training checks xxh64


def split_names(val_fraction: float) -> list[str]:
    """The splits a run writes: train unless everything is validation, val when val_fraction > 0."""
    return ([] if val_fraction >= 1.0 else ["train"]) + (["val"] if val_fraction > 0.0 else [])


def open_writers(outs: dict, token_dtype: str, cfg: ConvertConfig) -> dict:
    """One MDSWriter per split; `outs` maps split -> a folder or a (local, remote) pair."""
    from streaming import MDSWriter

    writers: dict = {}
    try:
        for split, out in outs.items():
            writers[split] = MDSWriter(
                columns={"input_ids": f"ndarray:{token_dtype}"},
                out=out,
                compression=None if cfg.compression == "none" else "zstd",
                hashes=list(SHARD_HASHES),
                size_limit=cfg.shard_size,
            )
    except BaseException:
        for w in writers.values():
            w.cancel_future_jobs()
        raise
    return writers


class SampleWriter:
    """Turns encoded documents into samples: the split, --min-tokens, --chunk-len, statistics.

    Both engines feed it documents in input order, so a part of the input written by the
    Ray engine holds exactly the samples the local engine writes for those documents.
    """

    def __init__(self, writers: dict, cfg: ConvertConfig, skipped: Counter, splits: list[str] | None = None):
        """`writers`: split -> MDSWriter (a dict that opens them on first use works too); `splits`:
        the splits to keep statistics for (default: the writers' keys)."""
        self.writers, self.cfg, self.skipped = writers, cfg, skipped
        self.stats = {s: _SplitStats() for s in (list(writers) if splits is None else splits)}

    def add(self, arrays: list[np.ndarray], in_val: list[bool]) -> None:
        for ids, v in zip(arrays, in_val):
            split = "val" if v else "train"
            if len(ids) < self.cfg.min_tokens:
                self.skipped["too_short"] += 1
                continue
            st = self.stats[split]
            st.documents += 1
            pieces = _chunks(ids, self.cfg.chunk_len)
            st.chunked_documents += len(pieces) > 1
            for piece in pieces:
                self.writers[split].write({"input_ids": piece})
                st.lengths[len(piece)] += 1

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.stats.values())


def no_documents_error(cfg: ConvertConfig, skipped: Counter) -> InputError:
    why = f"; skipped: {dict(skipped)}" if skipped else ""
    return InputError(BadInput(", ".join(map(str, cfg.inputs)), None, "empty", f"no documents found in the inputs{why}"))


def no_files_error(cfg: ConvertConfig) -> InputError:
    globs = f" (include: {list(cfg.include) or 'known suffixes'}, exclude: {list(cfg.exclude)})"
    return InputError(BadInput(", ".join(map(str, cfg.inputs)), None, "empty", "no input files found" + globs))


# --- the run ------------------------------------------------------------------------------
def convert(cfg: ConvertConfig) -> dict:
    """Run a conversion; returns the summary (also saved as OUTPUT/summary.json).

    Raises:
        InputError: bad input under ``on_error="fail"``, or no documents at all.
        OutputError: OUTPUT exists and ``overwrite`` is off, or is/contains/lies inside an input or
            the tokenizer, or cannot be created (checked before any work; flexbert.outputs).
        TokenizerError: the tokenizer folder is unusable.
    """
    from tqdm.auto import tqdm  # imported here to keep `import flexbert.data.convert` light

    start = time.perf_counter()
    out = Path(cfg.output)
    inputs = [("--input", list(cfg.inputs)), ("--tokenizer", cfg.tokenizer)]
    check_output_dir(out, inputs=inputs, overwrite=cfg.overwrite)
    info = load_tokenizer(cfg.tokenizer)
    files = expand_inputs(cfg.inputs, cfg.include, cfg.exclude)
    if not files:
        raise no_files_error(cfg)
    log.info("converting %d files with tokenizer %s (%d ids, %s) to %s", len(files), info.path, info.vocab_size, info.token_dtype, out)

    tmp = prepare_output_dir(out, inputs=inputs, overwrite=cfg.overwrite)
    writers: dict = {}
    try:
        writers = open_writers({s: str(tmp / s) for s in split_names(cfg.val_fraction)}, info.token_dtype, cfg)
        skipped: Counter = Counter()
        sink = SampleWriter(writers, cfg, skipped)
        examples: list[str] = []
        total_bytes = sum(_size(f) for f in files)
        with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="convert", disable=not cfg.progress) as bar:
            docs = iter_documents(files, cfg.text_field, cfg.on_error, skipped, bar.update, examples=examples)
            with contextlib.closing(_encoded(_batched(docs, cfg.batch_docs, cfg.batch_chars), info, cfg)) as results:
                for arrays, in_val in results:
                    sink.add(arrays, in_val)
                    bar.set_postfix(docs=sink.documents, refresh=False)
        if sink.documents == 0:
            raise no_documents_error(cfg, skipped)
        for w in writers.values():
            w.finish()
        elapsed = time.perf_counter() - start
        summary = _summary(cfg, info, files, sink.stats, skipped, examples, elapsed, out)
        atomic_write_json(tmp / "summary.json", summary)
        install_output_dir(tmp, out)
    except BaseException:
        for w in writers.values():
            w.cancel_future_jobs()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    warn_empty_splits(summary, cfg)
    return summary


def warn_empty_splits(summary: dict, cfg: ConvertConfig) -> None:
    for s, st in summary["splits"].items():
        if st["samples"] == 0:
            log.warning("split '%s' is empty (too few documents for --val-fraction %s)", s, cfg.val_fraction)


def _size(f: Path) -> int:
    try:
        return f.stat().st_size
    except OSError:
        return 0  # the reader reports the unreadable file with its reason


def _summary(cfg, info, files, stats, skipped, examples, elapsed, out) -> dict:
    split_summaries = {s: st.summary() for s, st in stats.items()}
    tokens = sum(s["tokens"] for s in split_summaries.values())
    options = {k: v for k, v in asdict(cfg).items() if k not in ("inputs", "tokenizer", "output", "progress")}
    return {
        "output": str(out),
        "tokenizer": {"path": str(info.path), "vocab_size": info.vocab_size, "dtype": info.token_dtype},
        "inputs": [str(p) for p in cfg.inputs],
        "files": [str(f) for f in files],
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        "splits": split_summaries,
        "skipped": {"total": sum(skipped.values()), "by_reason": dict(sorted(skipped.items())), "examples": examples},
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed) if elapsed > 0 else None,
    }


def format_summary(summary: dict) -> str:
    """Human-readable version of a conversion summary."""
    tok = summary["tokenizer"]
    engine = summary.get("engine")
    how = f" with Ray ({engine['parts']} parts, {engine['parts_converted_now']} converted now)" if engine else ""
    lines = [
        f"wrote {summary['output']} from {len(summary['files'])} files{how} in {summary['elapsed_s']:.1f}s "
        f"({summary['tokens_per_s'] or 0:,} tokens/s)",
        f"tokenizer: {tok['path']} ({tok['vocab_size']} ids, {tok['dtype']})",
    ]
    for name, s in summary["splits"].items():
        pct = s["sample_length"]
        lengths = ", ".join(f"{k} {v}" for k, v in pct.items()) if pct else "no samples"
        lines.append(
            f"  {name:5s}: {s['documents']:,} documents, {s['samples']:,} samples, {s['tokens']:,} tokens; length {lengths}"
        )
    sk = summary["skipped"]
    if sk["total"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sk["by_reason"].items())
        lines.append(f"  skipped {sk['total']} ({reasons}); see summary.json for examples")
    return "\n".join(lines)
