"""Held-out token documents for the probes: from MDS shards, from text files, or from a run's config.

Sources, in the order `load_heldout` tries them:

* `corpus` given: a folder with an MDS `index.json` (tokenized already: no tokenizer needed), or
  text / code / JSONL / Parquet files and folders (FlexBERT's readers), tokenized with the
  model's tokenizer;
* otherwise the run's held-out data named in its `config.yaml`: `eval_data` streams, else
  `data.eval_streams`, else the training streams at `data.eval_split`. Training data is never
  used implicitly: a run without held-out data is an error asking for `corpus`.

MDS shards are read directly (a compressed shard is decompressed in memory), never through a
StreamingDataset: nothing is written next to the data, no shared memory is created (the training
run's own dataset may be alive in the same process), and nothing is downloaded: a stream that
exists only remotely is an error. Special tokens are removed from every document, so probe
builders see only content ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from flexbert.config.loading import read_run
from flexbert.data.readers import InputError, expand_inputs, iter_documents
from flexbert.data.tokenizer import TokenizerError, load_tokenizer
from flexbert.errors import ConfigError

__all__ = ["HeldOut", "HeldOutError", "read_mds_folder", "read_text_corpus", "heldout_folders_from_config",
           "load_heldout", "heldout_from_arrays"]

_INDEX = "index.json"


class HeldOutError(ValueError):
    """No usable held-out data; the message says what to pass instead."""


@dataclasses.dataclass
class HeldOut:
    """Content-only token documents and where they came from.

    Attributes:
        docs: (n_i,) int64 arrays of content ids (special tokens removed), in source order.
        source: human-readable origin (paths) for reports.
        fingerprint: sha1 of the tokens: equal fingerprints mean the probes saw the same data.
    """

    docs: list[np.ndarray]
    source: str
    fingerprint: str

    @property
    def num_tokens(self) -> int:
        return int(sum(len(d) for d in self.docs))

    def stream(self) -> np.ndarray:
        """All documents back to back, (N,) int64."""
        return np.concatenate(self.docs) if self.docs else np.zeros(0, dtype=np.int64)

    def vocabulary(self) -> np.ndarray:
        """The distinct ids that occur, sorted: the pool random keys and markers are drawn from."""
        return np.unique(self.stream())


def heldout_from_arrays(docs: Iterable[np.ndarray], special_ids: Iterable[int], source: str,
                        vocab_size: Optional[int] = None) -> HeldOut:
    """Build a HeldOut from id arrays: drop special ids and empty documents, check the vocabulary.

    Args:
        docs: id arrays (e.g. MDS samples [CLS] ... [SEP]).
        special_ids: ids never used as content (pad, cls, sep, mask, unk, ...).
        source: where they came from.
        vocab_size: the model's vocabulary; an id at or above it is an error.
    """
    special = np.asarray(sorted(set(int(i) for i in special_ids)), dtype=np.int64)
    out = []
    for d in docs:
        a = np.asarray(d, dtype=np.int64).reshape(-1)
        a = a[~np.isin(a, special)]
        if len(a):
            out.append(a)
    if not out:
        raise HeldOutError(f"{source}: no content tokens (empty, or only special tokens)")
    top = max(int(a.max()) for a in out)
    if vocab_size is not None and top >= vocab_size:
        raise HeldOutError(f"{source}: token id {top} is outside the model's vocabulary ({vocab_size} ids); "
                           "was it tokenized with another tokenizer? pass held-out data of the model's tokenizer")
    digest = hashlib.sha1()
    for a in out:
        digest.update(a.astype("<i8").tobytes())
        digest.update(b"|")
    return HeldOut(out, source, digest.hexdigest()[:16])


# ---------------------------------------------------------------------------------------------
# MDS
# ---------------------------------------------------------------------------------------------
def _shard_bytes(folder: Path, shard: dict) -> bytes:
    raw = shard.get("raw_data") or {}
    raw_path = folder / raw.get("basename", "")
    if raw.get("basename") and raw_path.is_file():
        return raw_path.read_bytes()
    zipped = shard.get("zip_data") or {}
    zip_path = folder / zipped.get("basename", "")
    if zipped.get("basename") and zip_path.is_file():
        from streaming.base.compression import decompress

        return decompress(shard["compression"], zip_path.read_bytes())
    raise HeldOutError(f"{folder}: shard {raw.get('basename') or zipped.get('basename')} is not on disk; the probes "
                       "read local shards only (nothing is downloaded): copy the split here or pass another corpus")


def read_mds_folder(folder: str | os.PathLike, max_tokens: Optional[int] = None,
                    column: str = "input_ids") -> list[np.ndarray]:
    """The `column` arrays of an MDS folder (one split), in order, up to about `max_tokens` ids.

    Raises:
        HeldOutError: no index.json, an unsafe (pickled) column, a missing column or shard.
    """
    from streaming.base.format.mds.reader import MDSReader

    folder = Path(folder)
    index_file = folder / _INDEX
    if not index_file.is_file():
        raise HeldOutError(f"{folder} has no {_INDEX}; pass the folder of one MDS split (e.g. data/demo/mds/val)")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as e:
        raise HeldOutError(f"{index_file}: cannot read: {e}") from None
    docs: list[np.ndarray] = []
    total = 0
    for shard in index.get("shards", []):
        if shard.get("format") != "mds":
            raise HeldOutError(f"{index_file}: shard format {shard.get('format')!r} is not mds")
        if column not in shard.get("column_names", []):
            raise HeldOutError(f"{index_file}: no column {column!r} (columns: {shard.get('column_names')})")
        reader = MDSReader.from_json(str(folder), None, shard)
        try:
            reader.validate(allow_unsafe_types=False)  # a pickle column could run code: refuse
        except ValueError as e:
            raise HeldOutError(f"{folder}: {e}") from None
        data = _shard_bytes(folder, shard)
        n = int(np.frombuffer(data[:4], np.uint32)[0])
        offsets = np.frombuffer(data[4:4 + 4 * (n + 1)], np.uint32)
        for i in range(n):
            sample = reader.decode_sample(data[offsets[i]:offsets[i + 1]])
            ids = np.asarray(sample[column]).astype(np.int64).reshape(-1)
            docs.append(ids)
            total += len(ids)
            if max_tokens is not None and total >= max_tokens:
                return docs
    return docs


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------
def read_text_corpus(paths: Sequence[str | os.PathLike], tokenizer_dir: str | os.PathLike, text_field: str = "text",
                     max_tokens: Optional[int] = None) -> tuple[list[np.ndarray], list[int]]:
    """Tokenize text / code / JSONL / Parquet files (FlexBERT's readers) without special tokens.

    Returns:
        (id arrays, the tokenizer's special ids).
    """
    try:
        info = load_tokenizer(tokenizer_dir)
        files = expand_inputs(paths)
    except (TokenizerError, InputError) as e:
        raise HeldOutError(str(e)) from None
    if not files:
        raise HeldOutError(f"no readable files in {', '.join(map(str, paths))}")
    docs: list[np.ndarray] = []
    total = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal total
        for enc in info.tokenizer.encode_batch(batch, add_special_tokens=False):
            docs.append(np.asarray(enc.ids, dtype=np.int64))
            total += len(enc.ids)
        batch.clear()

    try:
        for doc in iter_documents(files, text_field=text_field, on_error="skip"):
            batch.append(doc.text)
            if len(batch) >= 64:
                flush()
                if max_tokens is not None and total >= max_tokens:
                    break
    except InputError as e:
        raise HeldOutError(str(e)) from None
    if batch:
        flush()
    special = sorted(set(info.special_ids) | {info.pad_id, info.cls_id, info.sep_id, info.mask_id, info.unk_id})
    return docs, special


# ---------------------------------------------------------------------------------------------
# a run's config
# ---------------------------------------------------------------------------------------------
def _locate(path: str, config_file: Path) -> Optional[Path]:
    """A path recorded in config.yaml: as written (the training run's working directory), else beside it."""
    for candidate in (Path(path), config_file.parent / path, config_file.parent.parent / path):
        if candidate.is_dir():
            return candidate
    return None


def heldout_folders_from_config(config_file: str | os.PathLike) -> list[Path]:
    """The local MDS folders of a run's held-out data (eval_data, data.eval_streams or data.eval_split).

    Raises:
        HeldOutError: no held-out data in the config, a remote-only stream, or folders not found.
    """
    config_file = Path(config_file)
    try:
        cfg = read_run(str(config_file)).cfg  # the data sections only: no model config needed
    except (ConfigError, OSError) as e:
        raise HeldOutError(f"cannot read the run config {config_file} to find its held-out data ({e}); "
                           "pass the corpus explicitly (--corpus)") from None
    if cfg.eval_data is not None:
        streams, where = cfg.eval_data.train_streams(), "eval_data"
    else:
        streams, where = cfg.data.validation_streams(), "data.eval_split / data.eval_streams"
    if not streams:
        raise HeldOutError(f"{config_file}: the run has no held-out data (no eval_data, data.eval_split or "
                           "data.eval_streams); pass a corpus the model was not trained on (--corpus, or the "
                           "callback's `corpus` option), e.g. the val split of its MDS data")
    folders = []
    for s in streams:
        rel = os.path.join(s.local, s.split) if s.split else s.local
        found = _locate(rel, config_file) if s.local else None
        if found is None or not (found / _INDEX).is_file():
            remote = f" (remote {s.remote}; nothing is downloaded)" if s.remote else ""
            raise HeldOutError(f"{config_file}: held-out data {rel}{remote} from {where} is not found from here; "
                               "run from the training run's working directory or pass --corpus")
        folders.append(found)
    return folders


def load_heldout(corpus: Optional[str | os.PathLike | Sequence[str]], *, special_ids: Iterable[int], vocab_size: int,
                 config_file: Optional[str | os.PathLike] = None, tokenizer_dir: Optional[str] = None,
                 text_field: str = "text", max_tokens: Optional[int] = 2_000_000) -> HeldOut:
    """Held-out documents from `corpus` (MDS folder or text paths) or from the run's config.

    Args:
        corpus: an MDS split folder, text files / folders, a list of those, or None (use `config_file`).
        special_ids: the model's special ids (removed from documents).
        vocab_size: the model's vocabulary size (larger ids are an error).
        config_file: the run's config.yaml (for corpus None).
        tokenizer_dir: tokenizer for text corpora.
        text_field: JSONL / Parquet column holding the text.
        max_tokens: stop reading after about this many tokens (None: read everything).
    """
    special = set(int(i) for i in special_ids)
    if corpus is None:
        if config_file is None or not Path(config_file).suffix == ".yaml":
            raise HeldOutError("no held-out data: the model has no run config.yaml to find it in; pass --corpus "
                               "(the callback's `corpus` option): an MDS split folder, or text files with the "
                               "model's tokenizer")
        folders = heldout_folders_from_config(config_file)
        docs = []
        for folder in folders:
            docs += read_mds_folder(folder, None if max_tokens is None else max_tokens - sum(len(d) for d in docs))
            if max_tokens is not None and sum(len(d) for d in docs) >= max_tokens:
                break
        return heldout_from_arrays(docs, special, ", ".join(map(str, folders)), vocab_size)
    paths = [str(corpus)] if isinstance(corpus, (str, os.PathLike)) else [str(p) for p in corpus]
    if len(paths) == 1 and Path(paths[0]).is_dir() and (Path(paths[0]) / _INDEX).is_file():
        return heldout_from_arrays(read_mds_folder(paths[0], max_tokens), special, paths[0], vocab_size)
    for p in paths:
        splits = [d.name for d in Path(p).iterdir() if (d / _INDEX).is_file()] if Path(p).is_dir() else []
        if splits:
            raise HeldOutError(f"{p} holds MDS splits ({', '.join(sorted(splits))}); pass one of them, "
                               f"e.g. {Path(p) / sorted(splits)[-1]}")
    if tokenizer_dir is None:
        raise HeldOutError(f"{', '.join(paths)}: a text corpus needs the model's tokenizer; pass --tokenizer DIR")
    docs, tok_special = read_text_corpus(paths, tokenizer_dir, text_field, max_tokens)
    return heldout_from_arrays(docs, special | set(tok_special), ", ".join(paths), vocab_size)
